//! Agent- and operator-side library for Web Bot Auth keys (CLI arrives in a later issue).
