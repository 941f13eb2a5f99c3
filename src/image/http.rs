//! The HTTP client of cella's own fetches for a project (a registry's
//! blobs, `!Tar` and `!Download` URLs): ureq, blocking, with rustls, no
//! proxy from the environment, no redirects of its own (callers follow
//! them, deciding what each hop may carry), timeouts on every phase, and
//! a resolver that lets a connection go only to addresses the user
//! allows: the check is on the very addresses ureq connects to, so a name
//! cannot resolve to a public address for a check and a private one for
//! the connection.

use std::io;
use std::time::Duration;

use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::Agent;

use crate::config::netpolicy::AddressGuard;

/// An agent whose connections go only where `guard` allows.
pub fn agent(guard: AddressGuard) -> Agent {
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .user_agent(concat!("cella/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .timeout_per_read(Some(Duration::from_secs(120)))
        .build();
    let resolver = Guarded {
        guard,
        inner: DefaultResolver::default(),
    };
    Agent::with_parts(config, DefaultConnector::new(), resolver)
}

/// An address guard as ureq's resolver: a connection goes only to
/// addresses the user allows, checked on the addresses it connects to.
#[derive(Debug)]
struct Guarded {
    guard: AddressGuard,
    inner: DefaultResolver,
}

impl Resolver for Guarded {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = self.inner.resolve(uri, config, timeout)?;
        for addr in addrs.iter() {
            if let Err(kind) = self.guard.check(addr.ip()) {
                let host = uri.host().unwrap_or_default();
                let what = match host == addr.ip().to_string() {
                    true => format!("{host} is {kind}"),
                    false => format!("{host} resolves to {}, which is {kind}", addr.ip()),
                };
                return Err(ureq::Error::Io(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{what}; cella fetches from such addresses for a project only if \
                         the user allows them (--allow-address, or network.allow-addresses \
                         in the settings file)"
                    ),
                )));
            }
        }
        Ok(addrs)
    }
}
