//! Test certificate authorities (rcgen): a CA and the certificates it issues, as PEM files.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, written to files.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        TestCa { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `dir/name` and answers its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.pem()).unwrap();
        path
    }

    /// A server certificate for localhost and 127.0.0.1, written as `dir/<stem>.pem` and `dir/<stem>.key`.
    pub fn server(&self, dir: &Path, stem: &str) -> Issued {
        self.issue(dir, stem, &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth, None)
    }

    /// A client certificate.
    pub fn client(&self, dir: &Path, stem: &str) -> Issued {
        self.issue(dir, stem, &["client.example.com"], ExtendedKeyUsagePurpose::ClientAuth, None)
    }

    /// A client certificate with serial number `serial`.
    pub fn client_numbered(&self, dir: &Path, stem: &str, serial: u64) -> Issued {
        self.issue(dir, stem, &["client.example.com"], ExtendedKeyUsagePurpose::ClientAuth, Some(serial))
    }

    /// A revocation list of this CA naming the certificates numbered `serials`, written to
    /// `dir/name`; answers its path.
    pub fn revocations(&self, dir: &Path, name: &str, serials: &[u64]) -> PathBuf {
        let revoked = serials
            .iter()
            .map(|serial| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(*serial),
                revocation_time: rcgen::date_time_ymd(2026, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2036, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let path = dir.join(name);
        std::fs::write(&path, params.signed_by(&self.issuer).unwrap().pem().unwrap()).unwrap();
        path
    }

    fn issue(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        serial: Option<u64>,
    ) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>()).unwrap();
        params.extended_key_usages = vec![usage];
        params.serial_number = serial.map(rcgen::SerialNumber::from);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_file, key_file) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), cert_file, key_file }
    }
}
