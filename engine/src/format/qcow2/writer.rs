//! qcow2 writer (volume -> qcow2 v3).
