//! TLS and mTLS on our own listeners, under [`crate::transport`]: before a
//! connection reaches HTTP/2, [`server`] runs its TLS handshake with the
//! listener's current certificate (and, with a client CA, checks the
//! client's certificate and identity). [`files`] reads and checks the PEM
//! files; [`client`] is the client side that `floodgate bench` and
//! `floodgate admin` speak.

pub mod client;
pub mod files;
pub mod server;
