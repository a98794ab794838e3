//! The Lua scripts, assembled once per process, with their SHA1 for `EVALSHA`.

use std::sync::OnceLock;

use floodgate::Algorithm;

/// One of the store's Lua scripts: its name, source and SHA1 (what `EVALSHA` names it by).
///
/// The scripts are public so that `redis-benchmark` or `redis-cli` can run exactly what the store runs.
///
/// ```
/// use floodgate::Algorithm;
/// use floodgate_redis::ScriptSource;
///
/// let s = ScriptSource::for_algorithm(Algorithm::Gcra);
/// assert_eq!(s.name(), "meter");
/// assert_eq!(s.sha().len(), 40);
/// assert!(s.source().contains("'HGET'"));
/// ```
#[derive(Debug)]
pub struct ScriptSource {
    name: &'static str,
    source: String,
    sha: String,
}

impl ScriptSource {
    fn new(name: &'static str, source: String) -> Self {
        let sha = redis::Script::new(&source).get_hash().to_owned();
        ScriptSource { name, source, sha }
    }

    /// The script `hit`, `inc`, `set` and `inspect` run for `algorithm`.
    pub fn for_algorithm(algorithm: Algorithm) -> &'static ScriptSource {
        for_algorithm(algorithm)
    }

    /// The script `delete_buckets` runs.
    pub fn delete() -> &'static ScriptSource {
        delete()
    }

    /// `fixed_window`, `sliding_window`, `meter`, `sliding_log` or `delete`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The Lua source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The SHA1 of the source, in lower-case hex.
    pub fn sha(&self) -> &str {
        &self.sha
    }
}

const CODEC: &str = include_str!("lua/codec.lua");
const PRELUDE: &str = include_str!("lua/prelude.lua");

fn algorithm_script(name: &'static str, kind: char, body: &str) -> ScriptSource {
    // The body runs as a function so that Redis TIME can be appended to whatever table it returns.
    ScriptSource::new(
        name,
        format!(
            "local KIND = '{kind}'\n{CODEC}\n{PRELUDE}\nlocal function body()\n{body}\nend\nlocal r = body()\n\
             if type(r) == 'table' then r[#r + 1] = rt end\nreturn r\n"
        ),
    )
}

pub(crate) fn for_algorithm(algorithm: Algorithm) -> &'static ScriptSource {
    static FIXED: OnceLock<ScriptSource> = OnceLock::new();
    static SLIDING: OnceLock<ScriptSource> = OnceLock::new();
    static METER: OnceLock<ScriptSource> = OnceLock::new();
    static LOG: OnceLock<ScriptSource> = OnceLock::new();
    match algorithm {
        Algorithm::FixedWindow => {
            FIXED.get_or_init(|| algorithm_script("fixed_window", 'w', include_str!("lua/fixed_window.lua")))
        }
        Algorithm::SlidingWindow => {
            SLIDING.get_or_init(|| algorithm_script("sliding_window", 's', include_str!("lua/sliding_window.lua")))
        }
        Algorithm::SlidingLog => {
            LOG.get_or_init(|| algorithm_script("sliding_log", 'l', include_str!("lua/sliding_log.lua")))
        }
        _ => METER.get_or_init(|| algorithm_script("meter", 'm', include_str!("lua/meter.lua"))),
    }
}

pub(crate) fn delete() -> &'static ScriptSource {
    static DELETE: OnceLock<ScriptSource> = OnceLock::new();
    DELETE.get_or_init(|| ScriptSource::new("delete", format!("{CODEC}\n{}", include_str!("lua/delete.lua"))))
}
