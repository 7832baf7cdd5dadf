//! The gateway's table of every method it routes, built once from the embedded
//! descriptor sets: which class a method's rate limit counts against, whether it needs
//! credentials, whether it streams, and its cached metric handles. Layers look a call's
//! path up here instead of parsing it again, and use the `&'static` path as a metric
//! label so labelling allocates nothing.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};

use prost::Message;
use tonic::Code;

/// What a method's rate limit counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodClass {
    /// `Get*`, `List*`, `Watch*`: no side effects.
    Read,
    /// Every other method: mutations (and what idempotency applies to).
    Write,
    /// Sign-up, login and refresh: public, and what credential stuffing hammers.
    Login,
}

impl MethodClass {
    /// Every class, in the order of [`MethodClass::index`].
    pub const ALL: [MethodClass; 3] = [MethodClass::Read, MethodClass::Write, MethodClass::Login];

    /// The lowercase name used in keys, metrics and error metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodClass::Read => "read",
            MethodClass::Write => "write",
            MethodClass::Login => "login",
        }
    }

    /// A dense index for per-class arrays.
    pub fn index(self) -> usize {
        match self {
            MethodClass::Read => 0,
            MethodClass::Write => 1,
            MethodClass::Login => 2,
        }
    }
}

/// One routable method.
#[derive(Debug)]
pub struct MethodInfo {
    /// `/package.Service/Method`, or `"unknown"` for paths not in the table.
    pub path: &'static str,
    /// Its rate-limit class.
    pub class: MethodClass,
    /// Callable without credentials (sign-up, login, refresh, JWKS, health, reflection,
    /// and paths of services the gateway does not route, which answer UNIMPLEMENTED).
    pub public: bool,
    /// Platform plumbing (health, reflection) that rate limits leave alone.
    pub exempt: bool,
    /// Neither request nor response streams; only these get a default deadline and
    /// idempotency.
    pub unary: bool,
    counters: [OnceLock<metrics::Counter>; 17],
    latency: OnceLock<metrics::Histogram>,
}

impl MethodInfo {
    fn new(
        path: &'static str,
        class: MethodClass,
        public: bool,
        exempt: bool,
        unary: bool,
    ) -> Self {
        Self {
            path,
            class,
            public,
            exempt,
            unary,
            counters: Default::default(),
            latency: OnceLock::new(),
        }
    }

    /// Whether an `idempotency-key` on this method is honoured.
    pub fn idempotent_mutation(&self) -> bool {
        self.unary && self.class == MethodClass::Write && !self.public
    }

    /// Counts one finished call (`gateway_requests_total{method, code}`).
    pub fn count(&self, code: Code) {
        let i = (code as i32).clamp(0, 16) as usize;
        self.counters[i]
            .get_or_init(|| {
                metrics::counter!("gateway_requests_total", "method" => self.path, "code" => code_name(code))
            })
            .increment(1);
    }

    /// Records one call's latency (`gateway_request_duration_seconds{method}`).
    pub fn observe(&self, seconds: f64) {
        self.latency
            .get_or_init(
                || metrics::histogram!("gateway_request_duration_seconds", "method" => self.path),
            )
            .record(seconds);
    }
}

/// The SCREAMING_CASE name of a gRPC code, as metrics and logs show it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Identity methods callable without an access token, and the class they count in.
const PUBLIC_IDENTITY: [(&str, MethodClass); 4] = [
    ("CreateUser", MethodClass::Login),
    ("Login", MethodClass::Login),
    ("RefreshSession", MethodClass::Login),
    ("GetJwks", MethodClass::Read),
];

const REFLECTION: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

struct Table {
    /// Read on every layer of every call, written once: a fast hash, not a DoS-proof
    /// one (nothing a client sends is ever inserted).
    methods: HashMap<&'static str, MethodInfo, foldhash::fast::FixedState>,
    /// `/package.Service/` prefixes the gateway routes.
    services: Vec<&'static str>,
    unknown_method: MethodInfo,
    unknown_service: MethodInfo,
}

static TABLE: LazyLock<Table> = LazyLock::new(build);

fn leak(s: String) -> &'static str {
    // Built once per process from compile-time descriptors: a bounded, deliberate leak.
    Box::leak(s.into_boxed_str())
}

fn build() -> Table {
    let mut methods = HashMap::default();
    let mut services = Vec::new();
    for encoded in [
        ferrobank_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        let set = prost_types::FileDescriptorSet::decode(encoded)
            .expect("the embedded descriptor set decodes");
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                let full = format!("{package}.{}", service.name());
                let infra = full.starts_with("grpc.");
                services.push(leak(format!("/{full}/")));
                for method in &service.method {
                    let name = method.name();
                    let path = leak(format!("/{full}/{name}"));
                    let public_identity = (full == "ferrobank.identity.v1.IdentityService")
                        .then(|| PUBLIC_IDENTITY.iter().find(|(n, _)| *n == name))
                        .flatten();
                    let class = match public_identity {
                        Some((_, class)) => *class,
                        None if infra => MethodClass::Read,
                        None if ["Get", "List", "Watch", "Check"]
                            .iter()
                            .any(|p| name.starts_with(p)) =>
                        {
                            MethodClass::Read
                        }
                        None => MethodClass::Write,
                    };
                    let unary = !method.client_streaming() && !method.server_streaming();
                    let public = infra || public_identity.is_some();
                    methods.insert(path, MethodInfo::new(path, class, public, infra, unary));
                }
            }
        }
    }
    for path in REFLECTION {
        services.push(&path[..=path.rfind('/').unwrap_or(0)]);
        methods.insert(
            path,
            MethodInfo::new(path, MethodClass::Read, true, true, false),
        );
    }
    Table {
        methods,
        services,
        unknown_method: MethodInfo::new("unknown", MethodClass::Write, false, false, false),
        unknown_service: MethodInfo::new("unknown", MethodClass::Read, true, true, false),
    }
}

/// The method a request path names. A path not in the table is either an unknown
/// method of a routed service (needs credentials, like any method of it) or a path
/// the gateway does not route at all (answered UNIMPLEMENTED without further work).
pub fn lookup(path: &str) -> &'static MethodInfo {
    let table = &*TABLE;
    if let Some(info) = table.methods.get(path) {
        return info;
    }
    if table.services.iter().any(|s| path.starts_with(s)) {
        &table.unknown_method
    } else {
        &table.unknown_service
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Methods are classified by name, public identity methods need no token, health
    /// and reflection are exempt from rate limits, and unknown paths stay routable.
    #[test]
    fn classifies_methods() {
        let get = lookup("/ferrobank.ledger.v1.LedgerService/GetAccount");
        assert_eq!(
            (get.class, get.public, get.unary),
            (MethodClass::Read, false, true)
        );
        let transfer = lookup("/ferrobank.ledger.v1.LedgerService/CreateTransfer");
        assert!(transfer.idempotent_mutation());
        let watch = lookup("/ferrobank.ledger.v1.LedgerService/WatchEvents");
        assert!(!watch.unary);
        let login = lookup("/ferrobank.identity.v1.IdentityService/Login");
        assert_eq!((login.class, login.public), (MethodClass::Login, true));
        assert!(!lookup("/ferrobank.identity.v1.IdentityService/CreateUser").idempotent_mutation());
        assert!(lookup("/grpc.health.v1.Health/Check").exempt);
        assert!(lookup(REFLECTION[0]).public);
        let unknown = lookup("/ferrobank.ledger.v1.LedgerService/Nope");
        assert!(!unknown.public);
        assert!(lookup("/nope.Service/Nope").public);
    }
}
