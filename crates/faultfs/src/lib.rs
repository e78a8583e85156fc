//! A fault-injecting FUSE file system over a real directory, for kinbridge's durability tests:
//! it drops every write not yet fsynced (a power cut), returns `ENOSPC` past a byte budget (a
//! full disk), fails an `fsync` with `EIO` once, and tears or reorders the last write.
