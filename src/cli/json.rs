//! The `--json` contract (docs/json-contract.md): every document printed on stdout is one JSON
//! object carrying `"schema": SCHEMA`; a list is an object with the list under a named key; a
//! failure under `--json` is `{"schema": .., "error": {"category", "cinder_exception",
//! "message"}}` on stdout (and the usual one line on stderr, exit non-zero). A change that
//! removes or retypes a key raises [`SCHEMA`]; adding keys does not.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde_json::{Map, Value};

use ember_drivers::error::{category_of_engine, Category};
use ember_drivers::DriverError;

/// The version of the `--json` documents.
pub const SCHEMA: u32 = 1;

/// `value` (which must serialise to an object) with `"schema"` added.
pub fn document<T: Serialize>(value: &T) -> serde_json::Result<Value> {
    let mut map = match serde_json::to_value(value)? {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other);
            m
        }
    };
    map.insert("schema".into(), SCHEMA.into());
    Ok(Value::Object(map))
}

/// Set once a document went out: a call prints one document, so a command that printed its
/// report and then fails (an unsafe image's inspection) prints no error document after it.
static PRINTED: AtomicBool = AtomicBool::new(false);

/// True when this process already printed its document.
pub fn printed() -> bool {
    PRINTED.load(Ordering::Relaxed)
}

/// Prints `value` as a schema document on stdout (a reader that went away is not an error).
pub fn print<T: Serialize>(value: &T) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&document(value)?)?;
    PRINTED.store(true, Ordering::Relaxed);
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// Prints a list as `{"schema": .., key: [...]}`.
pub fn print_list<T: Serialize>(key: &str, items: &[T]) -> std::io::Result<()> {
    let mut m = Map::new();
    m.insert(key.into(), serde_json::to_value(items)?);
    print(&m)
}

/// Cinder's category of any error the commands return.
pub fn category(e: &(dyn std::error::Error + 'static)) -> Category {
    if let Some(d) = e.downcast_ref::<DriverError>() {
        d.category()
    } else if let Some(x) = e.downcast_ref::<ember_engine::Error>() {
        category_of_engine(x.kind())
    } else {
        Category::BackendApi
    }
}

/// The error document of a failed command.
pub fn error_document(e: &(dyn std::error::Error + 'static), message: String) -> Value {
    let c = category(e);
    serde_json::json!({
        "schema": SCHEMA,
        "error": {
            "category": c,
            "cinder_exception": c.cinder_name(),
            "message": message,
        }
    })
}
