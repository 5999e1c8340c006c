/**
 * TLS on TCP (CONTRACT.md §4 "Neighbours", issue 10: any local user could store forged entries over
 * TCP). Real certificates made here with openssl: a CA that signs the server and a client, and a
 * second CA whose client the server must refuse.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { freeTcpPort, metric } from '../helpers/ownPostgres.js';
import {
  cleanupServes,
  entryLine,
  rid,
  run,
  runCli,
  type ServeProcess,
  send,
  startServe,
  tempDir,
  waitFor,
} from '../helpers/serve.js';

let t: TestDatabase;
let pki: string;

async function openssl(args: string[]): Promise<void> {
  const r = await run('openssl', args);
  if (r.code !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** A CA, then `name` signed by it (EC P-256 keys, 1 day). */
async function makeCa(name: string): Promise<void> {
  await openssl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '1',
    '-subj',
    `/CN=${name}`,
    '-keyout',
    join(pki, `${name}.key`),
    '-out',
    join(pki, `${name}.pem`),
  ]);
}
async function makeCert(name: string, ca: string, ext: string): Promise<void> {
  await openssl([
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-subj',
    `/CN=${name}`,
    '-keyout',
    join(pki, `${name}.key`),
    '-out',
    join(pki, `${name}.csr`),
  ]);
  const extFile = join(pki, `${name}.ext`);
  await run('sh', ['-c', `printf '%s\\n' '${ext}' > ${extFile}`]);
  await openssl([
    'x509',
    '-req',
    '-in',
    join(pki, `${name}.csr`),
    '-CA',
    join(pki, `${ca}.pem`),
    '-CAkey',
    join(pki, `${ca}.key`),
    '-CAcreateserial',
    '-days',
    '1',
    '-extfile',
    extFile,
    '-out',
    join(pki, `${name}.pem`),
  ]);
}

const file = (n: string) => readFileSync(join(pki, n));

beforeAll(async () => {
  t = await createTestDatabase('tls');
  pki = await tempDir('ag-pki-');
  await makeCa('ca');
  await makeCa('other-ca');
  await makeCert('server', 'ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost');
  await makeCert('gateway', 'ca', 'extendedKeyUsage=clientAuth');
  await makeCert('intruder', 'other-ca', 'extendedKeyUsage=clientAuth');
}, 60_000);
afterAll(async () => {
  await cleanupServes();
  await t?.drop();
});

/** Sends lines over TLS with the ack handshake; resolves with the ack lines, or the error. */
function sendTls(
  port: number,
  lines: string[],
  client?: string,
): Promise<{ acks: string[]; error?: string }> {
  return new Promise((resolve) => {
    const sock = tlsConnect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      ca: file('ca.pem'),
      ...(client ? { cert: file(`${client}.pem`), key: file(`${client}.key`) } : {}),
    });
    let text = '';
    let error: string | undefined;
    sock.on('data', (d: Buffer) => {
      text += d.toString();
    });
    sock.on('error', (err) => {
      error = err.message;
    });
    sock.on('close', () => resolve({ acks: text.split('\n').filter(Boolean), ...(error ? { error } : {}) }));
    sock.on('secureConnect', () => {
      sock.end(`{"ack":true}\n${lines.join('\n')}\n`);
    });
    setTimeout(() => sock.destroy(), 20_000).unref();
  });
}

async function storedLike(prefix: string): Promise<number> {
  const r = await t.query<{ n: string }>(
    'SELECT count(*)::text AS n FROM audit_log WHERE request_id::text LIKE $1',
    [`${prefix}%`],
  );
  return Number(r.rows[0]!.n);
}

function tlsRefusals(s: ServeProcess): number {
  return s.logs().filter((l) => l.msg === 'refused a TCP client: TLS handshake failed').length;
}

describe('TLS on --listen', () => {
  it('client certificates required: the gateway is served; no certificate, a wrong one, or plain TCP is refused and logged', async () => {
    const port = await freeTcpPort();
    const mport = await freeTcpPort();
    const s = await startServe({
      databaseUrl: t.url,
      args: [
        '--listen',
        `127.0.0.1:${port}`,
        '--tls-cert',
        join(pki, 'server.pem'),
        '--tls-key',
        join(pki, 'server.key'),
        '--tls-client-ca',
        join(pki, 'ca.pem'),
        '--metrics-listen',
        `127.0.0.1:${mport}`,
      ],
    });
    const ok = await sendTls(port, [entryLine(rid('e1000000', 1))], 'gateway');
    expect(ok.acks).toEqual(['{"seq":1,"ok":true}']);
    expect(s.logs().find((l) => l.msg === 'TLS client')).toMatchObject({ client_cert: { CN: 'gateway' } });

    const none = await sendTls(port, [entryLine(rid('e1000001', 1))]);
    expect(none.acks).toEqual([]);
    const wrong = await sendTls(port, [entryLine(rid('e1000001', 2))], 'intruder');
    expect(wrong.acks).toEqual([]);
    const plain = await send({ host: '127.0.0.1', port }, `${entryLine(rid('e1000001', 3))}\n`).catch(
      (err: Error) => ({ text: err.message }),
    );
    expect(plain.text).not.toMatch(/"ok":true/);
    await waitFor(() => tlsRefusals(s) >= 3, 'three refusals logged');
    const reasons = s
      .logs()
      .filter((l) => l.msg === 'refused a TCP client: TLS handshake failed')
      .map((l) => String(l.err));
    expect(reasons.some((r) => /certificate/i.test(r))).toBe(true);
    expect(await metric(mport, 'audit_gateway_tls_handshake_errors_total')).toBeGreaterThanOrEqual(3);
    expect(await storedLike('e1000001')).toBe(0);
    expect(await storedLike('e1000000')).toBe(1);
    expect(await s.stop()).toBe(0);
  });

  it('server certificate only: a client without one is served over TLS', async () => {
    const port = await freeTcpPort();
    const s = await startServe({
      databaseUrl: t.url,
      args: [
        '--listen',
        `127.0.0.1:${port}`,
        '--tls-cert',
        join(pki, 'server.pem'),
        '--tls-key',
        join(pki, 'server.key'),
      ],
    });
    const r = await sendTls(port, [entryLine(rid('e2000000', 1)), '{"bad":1}']);
    expect(r.acks).toEqual(['{"seq":1,"ok":true}', expect.stringMatching(/^\{"seq":2,"ok":false/)]);
    expect(await s.stop()).toBe(0);
  });
});

describe('--listen on an address other than loopback', () => {
  it.each([['0.0.0.0'], ['::'], ['example.org']])(
    'without TLS: exit 2, one line naming --listen %s and the fix',
    async (host) => {
      const listen = host.includes(':') ? `[${host}]:7070` : `${host}:7070`;
      const r = await runCli(['serve', '--listen', listen, '--database-url', t.url]);
      expect(r.code).toBe(2);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/--listen .*7070: not a loopback address.*--tls-cert.*--insecure-listen/);
    },
  );

  it.each([
    [['--tls-cert', 'x.pem'], /both --tls-cert and --tls-key/],
    [['--tls-key', 'x.key'], /both --tls-cert and --tls-key/],
    [['--tls-client-ca', 'ca.pem'], /both --tls-cert and --tls-key/],
  ])('%j with --listen: exit 2', async (flags, message) => {
    const r = await runCli(['serve', '--listen', ':7070', ...flags, '--database-url', t.url]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
  });

  it('TLS flags without --listen: exit 2', async () => {
    const r = await runCli(['serve', '--tls-cert', 'a', '--tls-key', 'b', '--database-url', t.url]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/give --listen too/);
  });

  it('an unreadable --tls-cert: exit 1 naming the file', async () => {
    const r = await runCli([
      'serve',
      '--listen',
      ':7070',
      '--tls-cert',
      '/nonexistent/server.pem',
      '--tls-key',
      join(pki, 'server.key'),
      '--database-url',
      t.url,
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--tls-cert \/nonexistent\/server.pem: cannot read it/);
  });

  it('--insecure-listen: starts, with a warning', async () => {
    const port = await freeTcpPort();
    const s = await startServe({
      databaseUrl: t.url,
      args: ['--listen', `0.0.0.0:${port}`, '--insecure-listen'],
    });
    expect(s.logs().some((l) => String(l.msg).startsWith('--insecure-listen'))).toBe(true);
    expect(await s.stop()).toBe(0);
  });
});
