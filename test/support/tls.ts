import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Certificates for TLS tests, as files in one directory (PEM), and the PEM text of each. */
export interface TestCertificates {
  readonly dir: string;
  /** The CA that signed the server certificate. */
  readonly caCert: string;
  /** The server certificate (subjectAltName IP:127.0.0.1 and DNS:localhost) and its key. */
  readonly serverCert: string;
  readonly serverKey: string;
  /** A second, unrelated CA (it signed nothing the server uses). */
  readonly otherCaCert: string;
  /** A server certificate for the same names signed by the other CA, and its key. */
  readonly otherServerCert: string;
  readonly otherServerKey: string;
  /** PEM text of a file above. */
  pem(path: string): string;
}

/** Bound on one openssl run. */
const OPENSSL_TIMEOUT_MS = 10_000;
/** EC P-256: keys in milliseconds (RSA 2048 takes far longer), and every TLS stack accepts it. */
const KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

function openssl(dir: string, args: readonly string[]): void {
  execFileSync('openssl', args, {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
    timeout: OPENSSL_TIMEOUT_MS,
  });
}

/** A self-signed CA: `<name>.key` and `<name>.crt`. */
function makeCa(dir: string, name: string): void {
  openssl(dir, [
    'req',
    '-x509',
    ...KEY,
    ...['-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${name}`],
    ...['-addext', 'basicConstraints=critical,CA:TRUE'],
  ]);
}

/** `<name>.key` and `<name>.crt` for 127.0.0.1 and localhost, signed by the CA `<ca>`. */
function makeServer(dir: string, name: string, ca: string): void {
  openssl(dir, ['req', ...KEY, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', '/CN=aspen-node']);
  writeFileSync(join(dir, `${name}.ext`), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl(dir, [
    'x509',
    '-req',
    ...['-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial'],
    ...['-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.crt`],
  ]);
}

/** Make a CA, a server certificate it signs, and an unrelated CA with its own server certificate, in `dir`. */
export function makeTestCertificates(dir: string): TestCertificates {
  makeCa(dir, 'ca');
  makeServer(dir, 'server', 'ca');
  makeCa(dir, 'other-ca');
  makeServer(dir, 'other-server', 'other-ca');
  return {
    dir,
    caCert: join(dir, 'ca.crt'),
    serverCert: join(dir, 'server.crt'),
    serverKey: join(dir, 'server.key'),
    otherCaCert: join(dir, 'other-ca.crt'),
    otherServerCert: join(dir, 'other-server.crt'),
    otherServerKey: join(dir, 'other-server.key'),
    pem: (path) => readFileSync(path, 'utf8'),
  };
}
