//! One module per CLI verb (live, record and attach share `live`).
pub mod check;
pub mod doctor;
pub mod live;
pub mod record;
pub mod replay;
