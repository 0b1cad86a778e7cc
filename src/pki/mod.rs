//! The system's own certificate authority: the CA, participants' client certificates (the
//! "smartcard"), server certificates, and the revocation list the gateway honours.
//!
//! Files in `[pki] dir`: `ca.crt`, `ca.key` (0600) and `revoked.txt` (one certificate serial
//! number a line, lowercase hex). `ccass pki revoke` appends to `revoked.txt`; the gateway
//! re-reads it when its modification time changes ([`RevocationList`]), so a revocation takes
//! effect for the next connection without a restart.
//!
//! A client certificate's subject is `CN=<uid>,OU=<participant>,O=ccass`, the form the
//! directory holds in `description: cert-subject=...` ([`subject_of`] renders it back).

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use serde::Deserialize;

use crate::config::{ConfigError, check_range};

/// `[pki]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkiConfig {
    /// Folder holding `ca.crt`, `ca.key` and `revoked.txt`.
    pub dir: PathBuf,
    pub ca_validity_days: u32,
    pub certificate_validity_days: u32,
}

impl PkiConfig {
    pub fn check(&self) -> Result<(), ConfigError> {
        check_range("pki.ca_validity_days", self.ca_validity_days, 1..=36_500)?;
        check_range(
            "pki.certificate_validity_days",
            self.certificate_validity_days,
            1..=3_650,
        )?;
        Ok(())
    }

    pub fn ca_certificate_path(&self) -> PathBuf {
        self.dir.join(CA_CERTIFICATE_FILE)
    }

    pub fn revocation_list_path(&self) -> PathBuf {
        self.dir.join(REVOCATION_LIST_FILE)
    }
}

pub const CA_CERTIFICATE_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const REVOCATION_LIST_FILE: &str = "revoked.txt";
/// The organisation of every certificate this CA issues.
pub const ORGANISATION: &str = "ccass";
const CA_COMMON_NAME: &str = "ccass CA";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate authority already exists in {0} (refusing to overwrite)")]
    AlreadyInitialised(PathBuf),
    #[error("{what}: {source}")]
    Rcgen {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("certificate {path}: {message}")]
    Certificate { path: PathBuf, message: String },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PkiError + 'a {
    move |source| PkiError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn rcgen_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Rcgen { what, source }
}

/// A certificate and its key written to disk.
#[derive(Debug, Clone)]
pub struct Issued {
    pub certificate_path: PathBuf,
    pub key_path: PathBuf,
    /// Serial number, lowercase hex.
    pub serial: String,
}

/// Creates the CA in `config.dir` (the folder is created; an existing CA is never overwritten).
pub fn init(config: &PkiConfig) -> Result<Issued, PkiError> {
    let dir = &config.dir;
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let certificate_path = dir.join(CA_CERTIFICATE_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    if certificate_path.exists() || key_path.exists() {
        return Err(PkiError::AlreadyInitialised(dir.clone()));
    }
    let key = KeyPair::generate().map_err(rcgen_error("generate CA key"))?;
    let (params, serial) = ca_params(config.ca_validity_days)?;
    let certificate = params
        .self_signed(&key)
        .map_err(rcgen_error("sign CA certificate"))?;
    write_private(&key_path, key.serialize_pem())?;
    write_public(&certificate_path, &certificate.pem())?;
    let revoked = dir.join(REVOCATION_LIST_FILE);
    if !revoked.exists() {
        write_public(&revoked, "")?;
    }
    Ok(Issued {
        certificate_path,
        key_path,
        serial,
    })
}

/// The CA's parameters. The subject is fixed, so the issuer can be rebuilt from the key alone.
fn ca_params(validity_days: u32) -> Result<(CertificateParams, String), PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(rcgen_error("CA certificate parameters"))?;
    params.distinguished_name = name(&[
        (DnType::CommonName, CA_COMMON_NAME),
        (DnType::OrganizationName, ORGANISATION),
    ]);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let serial = set_validity_and_serial(&mut params, validity_days);
    Ok((params, serial))
}

fn name(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    for (kind, value) in parts {
        name.push(kind.clone(), *value);
    }
    name
}

fn set_validity_and_serial(params: &mut CertificateParams, validity_days: u32) -> String {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(validity_days));
    let mut serial = [0u8; 16];
    // Random enough and unique: time in nanoseconds plus a process-wide counter.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = now.unix_timestamp_nanos() as u64;
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    serial[..8].copy_from_slice(&nanos.to_be_bytes());
    serial[8..].copy_from_slice(&(count ^ u64::from(std::process::id())).to_be_bytes());
    serial[0] &= 0x7f; // positive
    serial[0] |= 0x01; // no leading zero byte, so the hex form is stable
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    hex(&serial)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn load_issuer(config: &PkiConfig) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key_path = config.dir.join(CA_KEY_FILE);
    let pem = std::fs::read_to_string(&key_path).map_err(io("read", &key_path))?;
    let key = KeyPair::from_pem(&pem).map_err(rcgen_error("read CA key"))?;
    let (params, _) = ca_params(config.ca_validity_days)?;
    Ok(Issuer::new(params, key))
}

/// Issues a participant user's client certificate into `out_dir` as
/// `<participant>-<uid>.crt` and `.key`.
pub fn issue_client(
    config: &PkiConfig,
    participant: &str,
    uid: &str,
    out_dir: &Path,
) -> Result<Issued, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(rcgen_error("client certificate parameters"))?;
    params.distinguished_name = name(&[
        (DnType::CommonName, uid),
        (DnType::OrganizationalUnitName, participant),
        (DnType::OrganizationName, ORGANISATION),
    ]);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign(
        config,
        params,
        out_dir,
        &format!("{participant}-{uid}"),
        None,
    )
}

/// Like [`issue_client`], valid from `not_before` to `not_after` instead of from now for
/// `certificate_validity_days` (tests: an expired certificate).
pub fn issue_client_valid_between(
    config: &PkiConfig,
    participant: &str,
    uid: &str,
    out_dir: &Path,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Result<Issued, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(rcgen_error("client certificate parameters"))?;
    params.distinguished_name = name(&[
        (DnType::CommonName, uid),
        (DnType::OrganizationalUnitName, participant),
        (DnType::OrganizationName, ORGANISATION),
    ]);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign(
        config,
        params,
        out_dir,
        &format!("{participant}-{uid}"),
        Some((not_before, not_after)),
    )
}

/// Issues a server certificate for `dns_names` (the first names the files:
/// `server-<name>.crt` and `.key`). IP addresses are accepted as names.
pub fn issue_server(
    config: &PkiConfig,
    dns_names: &[String],
    out_dir: &Path,
) -> Result<Issued, PkiError> {
    let mut params = CertificateParams::new(dns_names.to_vec())
        .map_err(rcgen_error("server certificate parameters"))?;
    let first = dns_names.first().map(String::as_str).unwrap_or("server");
    params.distinguished_name = name(&[
        (DnType::CommonName, first),
        (DnType::OrganizationName, ORGANISATION),
    ]);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sign(config, params, out_dir, &format!("server-{first}"), None)
}

fn sign(
    config: &PkiConfig,
    mut params: CertificateParams,
    out_dir: &Path,
    stem: &str,
    validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
) -> Result<Issued, PkiError> {
    let issuer = load_issuer(config)?;
    let serial = set_validity_and_serial(&mut params, config.certificate_validity_days);
    if let Some((not_before, not_after)) = validity {
        params.not_before = not_before;
        params.not_after = not_after;
    }
    let key = KeyPair::generate().map_err(rcgen_error("generate key"))?;
    let certificate = params
        .signed_by(&key, &issuer)
        .map_err(rcgen_error("sign certificate"))?;
    std::fs::create_dir_all(out_dir).map_err(io("create", out_dir))?;
    let certificate_path = out_dir.join(format!("{stem}.crt"));
    let key_path = out_dir.join(format!("{stem}.key"));
    write_private(&key_path, key.serialize_pem())?;
    write_public(&certificate_path, &certificate.pem())?;
    Ok(Issued {
        certificate_path,
        key_path,
        serial,
    })
}

/// Adds the certificate in `certificate_path` to the revocation list; returns its serial.
pub fn revoke(config: &PkiConfig, certificate_path: &Path) -> Result<String, PkiError> {
    let pem = std::fs::read(certificate_path).map_err(io("read", certificate_path))?;
    let der = first_certificate_der(&pem).ok_or_else(|| PkiError::Certificate {
        path: certificate_path.to_owned(),
        message: "no PEM certificate in the file".to_owned(),
    })?;
    let serial = serial_of(&der).map_err(|message| PkiError::Certificate {
        path: certificate_path.to_owned(),
        message,
    })?;
    let path = config.revocation_list_path();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io("open", &path))?;
    writeln!(file, "{serial}").map_err(io("append to", &path))?;
    file.sync_all().map_err(io("sync", &path))?;
    Ok(serial)
}

fn first_certificate_der(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem)
        .next()?
        .ok()
        .map(|der| der.to_vec())
}

/// Lowercase hex serial number of a DER certificate.
pub fn serial_of(der: &[u8]) -> Result<String, String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|error| format!("not an X.509 certificate: {error}"))?;
    Ok(hex(certificate.raw_serial()))
}

/// The subject in the directory's form, `CN=<uid>,OU=<participant>,O=ccass`, or `None` when a
/// part is missing.
pub fn subject_of(der: &[u8]) -> Result<String, String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|error| format!("not an X.509 certificate: {error}"))?;
    let subject = certificate.subject();
    let one = |attribute: Option<&x509_parser::x509::AttributeTypeAndValue<'_>>,
               what: &str|
     -> Result<String, String> {
        attribute
            .and_then(|value| value.as_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| format!("subject has no {what}"))
    };
    let common_name = one(subject.iter_common_name().next(), "CN")?;
    let unit = one(subject.iter_organizational_unit().next(), "OU")?;
    let organisation = one(subject.iter_organization().next(), "O")?;
    Ok(format!("CN={common_name},OU={unit},O={organisation}"))
}

fn write_private(path: &Path, text: impl AsRef<[u8]>) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))?;
    file.write_all(text.as_ref()).map_err(io("write", path))?;
    file.sync_all().map_err(io("sync", path))
}

fn write_public(path: &Path, text: &str) -> Result<(), PkiError> {
    std::fs::write(path, text).map_err(io("write", path))
}

/// The revocation list, re-read whenever the file's modification time or length changes.
#[derive(Debug)]
pub struct RevocationList {
    path: PathBuf,
    state: Mutex<RevocationState>,
}

#[derive(Debug, Default)]
struct RevocationState {
    stamp: Option<(SystemTime, u64)>,
    serials: HashSet<String>,
}

impl RevocationList {
    pub fn new(path: PathBuf) -> RevocationList {
        RevocationList {
            path,
            state: Mutex::new(RevocationState::default()),
        }
    }

    /// Whether `serial` (lowercase hex) is revoked. A missing file means nothing is revoked;
    /// an unreadable one is an error (fail closed: the caller refuses the connection).
    pub fn is_revoked(&self, serial: &str) -> Result<bool, PkiError> {
        let metadata = match std::fs::metadata(&self.path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(io("stat", &self.path)(source)),
        };
        let stamp = (
            metadata.modified().map_err(io("stat", &self.path))?,
            metadata.len(),
        );
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.stamp != Some(stamp) {
            let text = std::fs::read_to_string(&self.path).map_err(io("read", &self.path))?;
            state.serials = parse_revocation_list(&text);
            state.stamp = Some(stamp);
        }
        Ok(state.serials.contains(serial))
    }
}

fn parse_revocation_list(text: &str) -> HashSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Characters of [`bundle_password`]: no look-alikes (0/O, 1/l/I).
const PASSWORD_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// A fresh random password for a PKCS#12 bundle: four groups of five characters (about 99
/// bits), easy to type into a browser's import dialog.
pub fn bundle_password() -> Result<String, PkiError> {
    let mut random = [0u8; 20];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut random)
        .map_err(|_| PkiError::Certificate {
            path: PathBuf::new(),
            message: "no system randomness for a bundle password".to_owned(),
        })?;
    let mut password = String::with_capacity(23);
    for (index, byte) in random.iter().enumerate() {
        if index > 0 && index % 5 == 0 {
            password.push('-');
        }
        // 256 is not a multiple of 31: the bias is at most one part in eight per character.
        password.push(char::from(
            PASSWORD_ALPHABET[usize::from(*byte) % PASSWORD_ALPHABET.len()],
        ));
    }
    Ok(password)
}

/// Writes `issued`'s certificate and key, with the CA certificate, as a password-protected
/// PKCS#12 bundle `<stem>.p12` beside the certificate (0600), for a browser's certificate
/// import: PBES2 with PBKDF2/HMAC-SHA256 and AES-256-CBC, an HMAC-SHA256 MAC (the
/// `p12-keystore` defaults, which current Firefox, Chrome, Edge and macOS import). The alias
/// (friendly name) is the certificate's subject. Returns the bundle's path.
pub fn write_pkcs12(
    config: &PkiConfig,
    issued: &Issued,
    password: &str,
) -> Result<PathBuf, PkiError> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let bundle_error = |path: &Path| {
        let path = path.to_owned();
        move |error: p12_keystore::error::Error| PkiError::Certificate {
            path,
            message: format!("pkcs#12: {error}"),
        }
    };
    let read_certificate = |path: &Path| -> Result<Certificate, PkiError> {
        let pem = std::fs::read(path).map_err(io("read", path))?;
        let der = first_certificate_der(&pem).ok_or_else(|| PkiError::Certificate {
            path: path.to_owned(),
            message: "no PEM certificate".to_owned(),
        })?;
        Certificate::from_der(&der).map_err(bundle_error(path))
    };
    let certificate = read_certificate(&issued.certificate_path)?;
    let ca = read_certificate(&config.ca_certificate_path())?;
    let key_der = {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject as _;
        match PrivateKeyDer::from_pem_file(&issued.key_path) {
            Ok(PrivateKeyDer::Pkcs8(key)) => key.secret_pkcs8_der().to_vec(),
            Ok(_) => {
                return Err(PkiError::Certificate {
                    path: issued.key_path.clone(),
                    message: "key is not PKCS#8".to_owned(),
                });
            }
            Err(error) => {
                return Err(PkiError::Certificate {
                    path: issued.key_path.clone(),
                    message: format!("read key: {error}"),
                });
            }
        }
    };
    let key = PrivateKey::from_der(&key_der).map_err(bundle_error(&issued.key_path))?;
    let alias = subject_of(certificate.as_der()).unwrap_or_else(|_| issued.serial.clone());
    let mut store = KeyStore::new();
    store.add_entry(
        &alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(
            issued.serial.as_bytes(),
            key,
            [certificate, ca],
        )),
    );
    let path = issued.certificate_path.with_extension("p12");
    let bytes = store
        .writer(password)
        .write()
        .map_err(bundle_error(&path))?;
    write_private(&path, bytes)?;
    Ok(path)
}

/// What a PKCS#12 bundle holds: the first private key's certificate chain (DER, the entity
/// certificate first) and its PKCS#8 key (DER).
#[derive(Debug, Clone)]
pub struct Bundle {
    pub chain: Vec<Vec<u8>>,
    pub key_pkcs8: Vec<u8>,
}

/// Opens a PKCS#12 bundle with `password` (a wrong password or a changed file is an error).
pub fn read_pkcs12(path: &Path, password: &str) -> Result<Bundle, PkiError> {
    let bytes = std::fs::read(path).map_err(io("read", path))?;
    let store = p12_keystore::KeyStore::from_pkcs12(
        &bytes,
        password,
        p12_keystore::Pkcs12ImportPolicy::Strict,
    )
    .map_err(|error| PkiError::Certificate {
        path: path.to_owned(),
        message: format!("pkcs#12: {error}"),
    })?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or_else(|| PkiError::Certificate {
            path: path.to_owned(),
            message: "pkcs#12: no private key".to_owned(),
        })?;
    Ok(Bundle {
        chain: chain
            .certs()
            .iter()
            .map(|certificate| certificate.as_der().to_vec())
            .collect(),
        key_pkcs8: chain.key().as_der().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_list_ignores_blanks_and_comments_and_case() {
        // Goal: the list format is forgiving of hand edits. Method: parse a hand-written list.
        let serials = parse_revocation_list("# revoked\n\n01AB\n  02cd  \n");
        assert_eq!(serials.len(), 2);
        assert!(serials.contains("01ab"));
        assert!(serials.contains("02cd"));
    }

    #[tokio::test]
    async fn a_pkcs12_bundle_opens_with_its_password_and_passes_the_terminals_tls() {
        // Goal: the demo's browser bundle holds the user's certificate, its key and the CA,
        // opens only with its password, and the terminal's TLS (client certificate required)
        // accepts the certificate it holds. Method: a CA in a temporary folder, the bundle
        // written and read back, then a TLS 1.3 handshake in memory against the terminal's
        // server configuration (`gateway::server_tls_config`) with and without it.
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
        use std::os::unix::fs::PermissionsExt as _;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let config = PkiConfig {
            dir: dir.path().to_owned(),
            ca_validity_days: 30,
            certificate_validity_days: 30,
        };
        init(&config).unwrap();
        let server = issue_server(&config, &["localhost".to_owned()], dir.path()).unwrap();
        let client = issue_client(&config, "B01234", "ops1", dir.path()).unwrap();
        let password = bundle_password().unwrap();
        assert_eq!(password.len(), 23, "{password}");
        assert_ne!(password, bundle_password().unwrap());
        let path = write_pkcs12(&config, &client, &password).unwrap();
        assert_eq!(path, dir.path().join("B01234-ops1.p12"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let wrong = read_pkcs12(&path, "not-the-password").unwrap_err();
        assert!(wrong.to_string().contains("pkcs#12"), "{wrong}");
        let bundle = read_pkcs12(&path, &password).unwrap();
        let pem = std::fs::read(&client.certificate_path).unwrap();
        let ca_pem = std::fs::read(config.ca_certificate_path()).unwrap();
        assert_eq!(bundle.chain.len(), 2);
        assert_eq!(Some(&bundle.chain[0]), first_certificate_der(&pem).as_ref());
        assert_eq!(
            Some(&bundle.chain[1]),
            first_certificate_der(&ca_pem).as_ref()
        );
        assert_eq!(
            subject_of(&bundle.chain[0]).unwrap(),
            "CN=ops1,OU=B01234,O=ccass"
        );

        let server_config = Arc::new(
            crate::gateway::server_tls_config(&server.certificate_path, &server.key_path, &config)
                .unwrap(),
        );
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(bundle.chain[1].clone()))
            .unwrap();
        let roots = Arc::new(roots);
        let handshake = |client_config: rustls::ClientConfig| {
            let acceptor = tokio_rustls::TlsAcceptor::from(server_config.clone());
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
            async move {
                let (client_end, server_end) = tokio::io::duplex(64 * 1024);
                let (accepted, connected) = tokio::join!(
                    acceptor.accept(server_end),
                    connector.connect(ServerName::try_from("localhost").unwrap(), client_end)
                );
                let _ = connected;
                accepted.map(|stream| {
                    stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|der| der.to_vec())
                })
            }
        };
        let builder = || {
            rustls::ClientConfig::builder_with_provider(crate::gateway::crypto_provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots.clone())
        };
        let with_bundle = builder()
            .with_client_auth_cert(
                bundle
                    .chain
                    .iter()
                    .map(|der| CertificateDer::from(der.clone()))
                    .collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bundle.key_pkcs8.clone())),
            )
            .unwrap();
        let presented = handshake(with_bundle).await.unwrap();
        assert_eq!(presented.as_ref(), Some(&bundle.chain[0]));
        // Without a client certificate the terminal still refuses the connection.
        assert!(handshake(builder().with_no_client_auth()).await.is_err());
    }
}
