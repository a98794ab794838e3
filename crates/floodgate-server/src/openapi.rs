//! The OpenAPI 3.1 description of the HTTP API, generated from the handlers' annotations (`utoipa`).
//!
//! [`crate::http::router`] and this description are made from one list of routes, so every route the server
//! answers is described. `openapi.json` beside the crate's manifest is a copy, checked by a test to be exactly
//! what [`json`] answers; after changing a handler, write it again with
//! `FLOODGATE_WRITE_OPENAPI=1 cargo test -p floodgate-server --lib openapi`.
//!
//! ```
//! let api: serde_json::Value = serde_json::from_str(floodgate_server::openapi::json())?;
//! assert_eq!(api["openapi"], "3.1.0");
//! assert!(api["paths"]["/v1/hit"]["post"].is_object());
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::sync::LazyLock;

use utoipa::PartialSchema;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr};

/// The document's parts that belong to no route: its title and version, and the bearer token scheme.
pub(crate) fn base() -> OpenApi {
    let info = InfoBuilder::new()
        .title("Floodgate HTTP API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Rate limiting as a service. Endpoints that change state (hit, reset, reload, /json, upstream) need \
             `Authorization: Bearer <token>` when the server was started with a token. Errors are \
             `{\"error\": message}`.",
        ))
        .build();
    let mut api = OpenApiBuilder::new().info(info).build();
    let components = api.components.get_or_insert_with(Default::default);
    let bearer = SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
    components.add_security_scheme("bearer", bearer);
    // Referred to by `policy_ref`, which the route annotations cannot follow.
    components.schemas.insert("InlinePolicy".to_owned(), crate::http::InlinePolicy::schema());
    api
}

/// The schema of a request's `policy`: a policy's name from the config, or an inline policy.
pub(crate) fn policy_ref() -> impl Into<RefOr<Schema>> {
    OneOfBuilder::new()
        .description(Some("A policy's name from the config, or an inline policy"))
        .item(ObjectBuilder::new().schema_type(Type::String).description(Some("A policy's name from the config")))
        .item(Ref::from_schema_name("InlinePolicy"))
}

static JSON: LazyLock<String> = LazyLock::new(|| {
    let (_, api) = crate::http::api_routes().split_for_parts();
    let mut text = api.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
});

/// The description, as `GET /openapi.json` answers it.
pub fn json() -> &'static str {
    &JSON
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// The copy in the repository is exactly what the server serves (write it again: see the module docs).
    #[test]
    fn openapi_json_in_the_repository_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        if std::env::var_os("FLOODGATE_WRITE_OPENAPI").is_some() {
            std::fs::write(path, super::json()).expect("openapi.json is writable");
        }
        let copy = std::fs::read_to_string(path).expect("openapi.json is in the repository");
        assert!(
            copy == super::json(),
            "openapi.json is not what the handlers describe: run FLOODGATE_WRITE_OPENAPI=1 cargo test -p \
             floodgate-server --lib openapi"
        );
    }

    /// Every route is there with its method, and every schema a route refers to is defined.
    #[test]
    fn every_route_and_schema_is_described() {
        let api: Value = serde_json::from_str(super::json()).expect("the description is JSON");
        let routes = [
            ("post", "/v1/hit"),
            ("post", "/v1/inspect"),
            ("post", "/v1/reset"),
            ("post", "/v1/reload"),
            ("get", "/v1/limits"),
            ("post", "/v1/upstream/acquire"),
            ("post", "/v1/upstream/update"),
            ("get", "/v1/cluster"),
            ("post", "/json"),
            ("get", "/metrics"),
            ("get", "/healthz"),
            ("get", "/readyz"),
            ("get", "/healthcheck"),
            ("get", "/openapi.json"),
        ];
        for (method, path) in routes {
            assert!(api["paths"][path][method].is_object(), "{method} {path} is not described");
        }
        assert_eq!(api["paths"].as_object().map(|p| p.len()), Some(routes.len()), "a route that is not listed here");
        let text = super::json();
        for name in text.split("#/components/schemas/").skip(1).filter_map(|s| s.split('"').next()) {
            assert!(api["components"]["schemas"][name].is_object(), "schema {name} is referred to but not defined");
        }
        assert_eq!(api["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    }
}
