//! One module per CLI verb. `live`, `record` and `attach` are one traced run ([`run`]) with
//! different sinks; `replay` and `report` feed a session through the same pipeline.
pub(crate) mod attach;
pub(crate) mod check;
pub(crate) mod doctor;
pub(crate) mod live;
pub mod record;
pub mod replay;
pub(crate) mod report_html;
pub(crate) mod run;
pub(crate) mod top;

use std::io::{self, Write};

/// Writes a one-shot report (`check`, `doctor`) to `out`: one line of JSON, or `text` of it for
/// humans. I/O errors keep their kind (a closed pipe is `BrokenPipe`).
pub(crate) fn write_report<T: serde::Serialize>(
    out: &mut dyn Write,
    report: &T,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, report).map_err(io::Error::from)?;
        out.write_all(b"\n")?;
    } else {
        out.write_all(text(report).as_bytes())?;
    }
    out.flush()
}
