/**
 * Peer daemons doing the same job as `serve` (method d): read NDJSON from a Unix stream socket,
 * parse it and write rows into `audit_log`.
 *
 * - rsyslog: `imptcp` on a Unix socket (`path=`), `mmjsonparse` on the raw line, and `ompgsql`
 *   with one INSERT per entry inside transactions of up to 1000 (the action queue's batch).
 *   Debian: `apt-get install rsyslog rsyslog-pgsql` (preseed
 *   `rsyslog-pgsql/dbconfig-install boolean false` so dbconfig-common does not touch a database).
 * - syslog-ng (`sql()` destination, Debian `syslog-ng-core syslog-ng-mod-sql libdbd-pgsql`) is
 *   detected and reported, not driven: its sql() flattens nested JSON (request_args would not be
 *   stored as sent), so rsyslog is the peer measured here.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const RSYSLOGD = '/usr/sbin/rsyslogd';
const MODDIRS = [
  '/usr/lib/x86_64-linux-gnu/rsyslog',
  '/usr/lib/aarch64-linux-gnu/rsyslog',
  '/usr/lib/rsyslog',
];

/** Where rsyslog's modules are, when rsyslogd and ompgsql are both installed; else null. */
export function findRsyslog() {
  if (!existsSync(RSYSLOGD)) return null;
  for (const d of MODDIRS) {
    if (existsSync(join(d, 'ompgsql.so')) && existsSync(join(d, 'imptcp.so')))
      return { bin: RSYSLOGD, modDir: d };
  }
  return null;
}

/** True when syslog-ng with its sql() module is installed. */
export function hasSyslogNgSql() {
  return (
    existsSync('/usr/sbin/syslog-ng') &&
    MODDIRS.some((d) => existsSync(join(d.replace('rsyslog', 'syslog-ng'), 'libafsql.so')))
  );
}

/** rsyslog.conf for the bench: socket → mmjsonparse → ompgsql. */
function rsyslogConf({ sock, work, pg }) {
  // A URI: rsyslog refuses whitespace in the parameter.
  const conninfo = `postgresql://${encodeURIComponent(pg.user)}:${encodeURIComponent(pg.password)}@${pg.host}:${pg.port}/${encodeURIComponent(pg.database)}`;
  // option.stdsql doubles single quotes (standard_conforming_strings = on); NULLIF maps the empty
  // rendering of a JSON null (or a missing field) to SQL NULL.
  const sql =
    'INSERT INTO audit_log (request_id, \\"timestamp\\", client_subject, client_role, tool_name, backend_name, request_args, response_status, error_message, latency_ms) VALUES (' +
    "'%$!request_id%', '%$!timestamp%', '%$!client_subject%', NULLIF('%$!client_role%', ''), '%$!tool_name%', " +
    "NULLIF('%$!backend_name%', ''), NULLIF('%$!request_args%', '')::jsonb, '%$!response_status%', " +
    "NULLIF('%$!error_message%', ''), NULLIF('%$!latency_ms%', '')::bigint)";
  return `global(workDirectory="${work}" maxMessageSize="1m")
main_queue(queue.type="FixedArray" queue.size="100000" queue.dequeueBatchSize="1000")
module(load="imptcp")
module(load="mmjsonparse")
module(load="ompgsql")
template(name="audit_insert" type="string" option.stdsql="on" string="${sql}")
ruleset(name="audit") {
  action(type="mmjsonparse" cookie="" useRawMsg="on")
  if $parsesuccess == "OK" then {
    action(type="ompgsql" conninfo="${conninfo}" template="audit_insert"
           queue.type="LinkedList" queue.size="100000" queue.dequeueBatchSize="1000"
           action.resumeRetryCount="-1")
  }
}
input(type="imptcp" path="${sock}" unlink="on" ruleset="audit")
`;
}

/**
 * Starts rsyslogd in the foreground with the bench config.
 * @returns {{ proc, pid: number, sock: string, stop(): Promise<number|null>, stderr(): string }}
 */
export async function startRsyslog({ rs, dir, pg }) {
  const sock = join(dir, 'rsyslog.sock');
  const conf = join(dir, 'rsyslog.conf');
  await writeFile(conf, rsyslogConf({ sock, work: dir, pg }));
  const proc = spawn(rs.bin, ['-n', '-f', conf, '-i', join(dir, 'rsyslogd.pid'), '-M', rs.modDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  proc.stdout.on('data', (d) => {
    err += d;
  });
  proc.stderr.on('data', (d) => {
    err += d;
  });
  const exited = new Promise((r) => proc.on('exit', (code) => r(code)));
  const t0 = Date.now();
  while (!existsSync(sock)) {
    if (proc.exitCode !== null) throw new Error(`rsyslogd exited at start: ${err.trim().slice(-500)}`);
    if (Date.now() - t0 > 20_000)
      throw new Error(`rsyslogd did not create ${sock}: ${err.trim().slice(-500)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    proc,
    pid: proc.pid,
    sock,
    stderr: () => err,
    stop: async () => {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 30_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}
