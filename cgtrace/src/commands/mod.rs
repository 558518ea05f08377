//! One module per CLI verb. `live`, `record` and `attach` are one traced run ([`run`]) with
//! different sinks; `replay` and `report` feed a session through the same pipeline.
pub mod attach;
pub mod check;
pub mod doctor;
pub mod live;
pub mod record;
pub mod replay;
pub mod report_html;
pub mod run;
pub mod top;
