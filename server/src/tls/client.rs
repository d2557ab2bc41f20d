//! The client side of TLS, for `floodgate bench` and `floodgate admin` (being written).
