//! Reading the scripts' replies.

use std::time::Duration;

use floodgate::{BucketInfo, Decision, Timestamp};
use redis::Value;

use crate::failure::RedisStoreError;

pub(crate) fn int(v: &Value) -> Result<i64, RedisStoreError> {
    match v {
        Value::Int(n) => Ok(*n),
        other => Err(RedisStoreError::Reply(format!("expected an integer, got {other:?}"))),
    }
}

pub(crate) fn micros(v: &Value) -> Result<u64, RedisStoreError> {
    let n = int(v)?;
    u64::try_from(n).map_err(|_| RedisStoreError::Reply(format!("negative number {n}")))
}

pub(crate) fn parse_decision(v: Value) -> Result<Decision, RedisStoreError> {
    match v {
        Value::Array(items) if items.len() == 5 => {
            let retry = int(&items[4])?;
            Ok(Decision {
                allowed: int(&items[0])? == 1,
                limit: micros(&items[1])?,
                remaining: micros(&items[2])?,
                reset_after: Duration::from_micros(micros(&items[3])?),
                retry_after: (retry >= 0).then(|| Duration::from_micros(retry.unsigned_abs())),
                fallback: false,
            })
        }
        other => Err(RedisStoreError::Reply(format!("expected a decision, got {other:?}"))),
    }
}

pub(crate) fn parse_info(v: Value) -> Result<Option<BucketInfo>, RedisStoreError> {
    match v {
        Value::Nil => Ok(None),
        Value::Array(items) if items.len() == 7 => {
            let reset_after = Duration::from_micros(micros(&items[2])?);
            Ok(Some(BucketInfo {
                used: micros(&items[0])?,
                remaining: micros(&items[1])?,
                reset_after,
                // The script's time of the inspection, plus reset_after: summed here, past 2^53 doubles round.
                expires_at: Timestamp::from_micros(micros(&items[6])?) + reset_after,
                next_window_after: Duration::from_micros(micros(&items[3])?),
                created: Timestamp::from_micros(micros(&items[4])?),
                updated: Timestamp::from_micros(micros(&items[5])?),
            }))
        }
        other => Err(RedisStoreError::Reply(format!("expected bucket info, got {other:?}"))),
    }
}
