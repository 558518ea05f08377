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
