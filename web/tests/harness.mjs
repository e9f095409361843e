// What the browser tests drive the page against: the real server binary ($PORTCULLIS_BIN) on a
// free port with a fresh SQLite database, an admin API key from `portcullis init` for changes
// made "from outside" with grpcurl, and login codes read from the server's log (mail.transport
// = log prints them).
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

export async function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

export class Server {
  /** Starts a server on `port` (a free one when not given) with `env` over this process's. */
  static async start(env = {}, port = undefined) {
    const binary = process.env.PORTCULLIS_BIN;
    if (!binary) throw new Error("PORTCULLIS_BIN must name the server binary (scripts/web-tests.sh sets it)");
    const directory = mkdtempSync(join(tmpdir(), "portcullis-web-"));
    const serverEnv = {
      ...process.env,
      PORTCULLIS_DATABASE_URL: `sqlite://${join(directory, "portcullis.db")}?mode=rwc`,
      ...env,
    };
    const adminKey = execFileSync(binary, ["init", "--admin-email", "admin@example.com"], {
      cwd: directory,
      env: serverEnv,
      encoding: "utf8",
    }).trim();
    port ??= await freePort();
    const log = join(directory, "server.log");
    const output = openSync(log, "a");
    const child = spawn(binary, ["serve", "--listen", `127.0.0.1:${port}`], {
      cwd: directory,
      env: serverEnv,
      stdio: ["ignore", output, output],
    });
    const server = new Server(child, port, adminKey, log);
    await server.listening();
    return server;
  }

  constructor(child, port, adminKey, log) {
    this.child = child;
    this.port = port;
    this.addr = `127.0.0.1:${port}`;
    this.url = `http://127.0.0.1:${port}/`;
    this.adminKey = adminKey;
    this.log = log;
  }

  async listening() {
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const open = await new Promise((resolve) => {
        const socket = connect(this.port, "127.0.0.1", () => {
          socket.destroy();
          resolve(true);
        });
        socket.on("error", () => resolve(false));
      });
      if (open) return;
      await sleep(50);
    }
    throw new Error(`the server did not listen:\n${readFileSync(this.log, "utf8")}`);
  }

  stop() {
    this.child.kill("SIGKILL");
  }

  /** Calls `method` (`Service/Method` of portcullis.v1) with an API key (the admin's unless
   * given); answers the JSON, or throws with grpcurl's error. */
  call(method, body = {}, key = this.adminKey) {
    const output = execFileSync(
      "grpcurl",
      ["-plaintext", "-H", `x-api-key: ${key}`, "-d", JSON.stringify(body), this.addr, `portcullis.v1.${method}`],
      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
    );
    return JSON.parse(output || "{}");
  }

  /** The newest login code mailed to `email` after `since` log bytes (see `logSize`). */
  async loginCode(email, since) {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const lines = readFileSync(this.log, "utf8").slice(since).split("\n");
      const found = lines.filter((line) => line.includes(`email=${email}`) && line.includes("login code: "));
      if (found.length > 0) {
        const line = found[found.length - 1];
        const at = line.indexOf("login code: ") + "login code: ".length;
        return line.slice(at, at + 6);
      }
      await sleep(50);
    }
    throw new Error(`no login code for ${email} in the server log`);
  }

  logSize() {
    return readFileSync(this.log, "utf8").length;
  }
}

/** Runs tests/support/ec2.py, the independent boto3 client of the Rust tests, against moto. */
export function ec2(...args) {
  const python = process.env.PORTCULLIS_TEST_PYTHON || "python3";
  const script = new URL("../../tests/support/ec2.py", import.meta.url).pathname;
  return JSON.parse(execFileSync(python, [script, process.env.PORTCULLIS_TEST_MOTO_URL, "us-east-1", ...args], { encoding: "utf8" }));
}

export async function eventually(what, check, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await sleep(100);
  }
  throw new Error(`${what} (within ${timeoutMs} ms); last seen: ${JSON.stringify(last)}`);
}

/**
 * A real OpenID Connect provider ($PORTCULLIS_TEST_DEX, which scripts/dex.sh builds) whose one
 * user, admin@example.com (password "password"), is in group "ops"; its client sends browsers
 * back to `redirect`.
 */
export class Dex {
  // bcrypt of "password", as Dex's own examples spell it.
  static PASSWORD_HASH = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";

  static async start(redirect) {
    const directory = mkdtempSync(join(tmpdir(), "portcullis-dex-"));
    const port = await freePort();
    const issuer = `http://127.0.0.1:${port}/dex`;
    // JSON is YAML: no YAML writer needed.
    const config = {
      issuer,
      storage: { type: "memory" },
      web: { http: `127.0.0.1:${port}` },
      oauth2: { skipApprovalScreen: true },
      enablePasswordDB: true,
      staticPasswords: [
        {
          email: "admin@example.com",
          hash: Dex.PASSWORD_HASH,
          username: "admin",
          userID: "b7d2c2a4-5e84-4b7c-9d55-8d0c1f3e8a11",
          groups: ["ops"],
        },
      ],
      staticClients: [{ id: "portcullis", secret: "portcullis-test-secret", name: "Portcullis", redirectURIs: [redirect] }],
    };
    writeFileSync(join(directory, "dex.yaml"), JSON.stringify(config));
    const output = openSync(join(directory, "dex.log"), "a");
    const child = spawn(process.env.PORTCULLIS_TEST_DEX, ["serve", join(directory, "dex.yaml")], {
      stdio: ["ignore", output, output],
    });
    const dex = new Dex(child, issuer, `http://127.0.0.1:${port}/`);
    await eventually("Dex answers discovery", async () => {
      try {
        return (await fetch(`${issuer}/.well-known/openid-configuration`)).ok;
      } catch {
        return false;
      }
    }, 20_000);
    return dex;
  }

  constructor(child, issuer, origin) {
    this.child = child;
    this.issuer = issuer;
    this.origin = origin;
  }

  stop() {
    this.child.kill("SIGKILL");
  }
}
