//! Boot media: how Lifeboat recognises the disk it booted from (so it is reported and refused as a
//! target).
