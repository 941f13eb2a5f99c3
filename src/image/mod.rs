//! Setup steps → read-only rootfs images (being written).
