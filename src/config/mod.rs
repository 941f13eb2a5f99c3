//! cella.yaml → typed model (being written).
