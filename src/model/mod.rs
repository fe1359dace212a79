//! Models shared by a tool family, built from one tshark pass and cached per file and
//! display filter, so tools of one family share that pass.

pub mod tcp;
