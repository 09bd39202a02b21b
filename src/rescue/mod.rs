//! The rescue engine: reads a possibly failing source the way GNU ddrescue does, keeping the
//! whole state in one sorted extent map (compatible with ddrescue's mapfile).
