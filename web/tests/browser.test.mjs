// The page in a real browser (Debian's chromium, driven by playwright-core) against the real
// server: logging in, a session followed live from PENDING to ACTIVE and to CANCELLED when an
// admin stops it elsewhere, the same on moto's EC2, an admin creating a user and an assignment,
// a bad code, the page at phone width, and an axe-core accessibility check. Screenshots of each
// step go to web/test-results/.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";
import { Dex, Server, ec2, eventually, freePort } from "./harness.mjs";

const CHROMIUM = process.env.PORTCULLIS_TEST_CHROMIUM || "/usr/bin/chromium";
/** The browser's address as the trusted proxy reports it (TEST-NET-3). */
const BROWSER_ADDRESS = "203.0.113.7";
const SHOTS = new URL("../test-results/", import.meta.url).pathname;
mkdirSync(SHOTS, { recursive: true });

let server;
let dex;
let browser;
/** Every Content-Security-Policy refusal any page reported: the page must work under its CSP. */
const cspViolations = [];

before(async () => {
  const port = await freePort();
  const env = {
    // moto listens on loopback; the operator allows that endpoint for the AWS resource below.
    PORTCULLIS_PROVIDERS__ALLOWED_ENDPOINTS: '["http://127.0.0.1:*"]',
    // The browser runs on this machine, so it reaches the server from 127.0.0.1, an address no
    // firewall rule is made for: as behind a reverse proxy, the proxy on loopback names it.
    PORTCULLIS_NETWORK__TRUSTED_PROXIES: '["127.0.0.1/32"]',
  };
  if (process.env.PORTCULLIS_TEST_DEX) {
    dex = await Dex.start(`http://127.0.0.1:${port}/sso/callback`);
    Object.assign(env, {
      PORTCULLIS_SEALING_KEY: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
      PORTCULLIS_SERVER__PUBLIC_URL: `http://127.0.0.1:${port}`,
      PORTCULLIS_SSO__ALLOWED_PRIVATE_ISSUERS: JSON.stringify([dex.origin]),
    });
  }
  server = await Server.start(env, port);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  server?.stop();
  dex?.stop();
  assert.deepEqual(cspViolations, [], "the page broke its own Content-Security-Policy");
});

async function newPage(options = {}) {
  const context = await browser.newContext({
    viewport: { width: 1100, height: 900 },
    extraHTTPHeaders: { "x-forwarded-for": BROWSER_ADDRESS },
    ...options,
  });
  const page = await context.newPage();
  page.on("console", (message) => {
    if (message.text().includes("Content Security Policy")) cspViolations.push(message.text());
  });
  return page;
}

/** Logs `email` in through the page with the code read from the mail log. */
async function logIn(page, email) {
  await page.goto(server.url);
  await page.getByLabel("Email", { exact: true }).fill(email);
  const since = server.logSize();
  await page.getByRole("button", { name: "Email me a code" }).click();
  const code = await server.loginCode(email, since);
  await page.getByLabel("Code", { exact: true }).fill(code);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { name: "Your access" }).waitFor();
}

function admin() {
  return server.call("UserService/GetCurrentUser").user;
}

/** A memory resource whose every provider call takes `latencyMs`, assigned to `userId`. */
function memoryResource(name, latencyMs, userId = admin().id) {
  const resource = server.call("ResourceService/CreateResource", {
    resource: { name, memory: { latencyMs } },
  }).resource;
  server.call("ResourceService/AssignResource", { resourceId: resource.id, userId });
  return resource;
}

/** The card of the newest session on the page, and its status as shown. */
function card(page) {
  return page.locator("article.session").last();
}

async function shownStatus(page) {
  return card(page).locator("h2 .status").getAttribute("data-status");
}

/** Marks the page so a reload would be noticed: the mark lives in the page's memory only. */
async function markNoReload(page) {
  await page.evaluate(() => {
    window.portcullisTestMark = true;
  });
}

async function assertNotReloaded(page) {
  assert.equal(await page.evaluate(() => window.portcullisTestMark === true), true, "the page was reloaded");
}

test("a wrong code shows an error and keeps the form", async () => {
  const page = await newPage();
  await page.goto(server.url);
  await page.screenshot({ path: `${SHOTS}01-login.png` });
  await page.getByLabel("Email", { exact: true }).fill("admin@example.com");
  await page.getByRole("button", { name: "Email me a code" }).click();
  await page.getByLabel("Code", { exact: true }).fill("000000");
  await page.getByRole("button", { name: "Log in" }).click();
  const alert = page.getByRole("alert");
  await alert.waitFor();
  assert.match(await alert.innerText(), /code/i);
  assert.equal(await page.getByLabel("Code", { exact: true }).inputValue(), "000000", "the typed code is kept");
  await page.screenshot({ path: `${SHOTS}02-wrong-code.png` });
  await page.context().close();
});

test("a session turns from PENDING to ACTIVE, then CANCELLED when an admin stops it, without a reload", async () => {
  const alice = server.call("UserService/CreateUser", { user: { email: "alice@example.com", role: "ROLE_USER" } }).user;
  memoryResource("db-memory", 2000, alice.id);
  const page = await newPage();
  await logIn(page, "alice@example.com");
  await markNoReload(page);
  await page.screenshot({ path: `${SHOTS}03-home.png` });
  await page.getByRole("button", { name: "Start" }).click();

  await eventually("the card shows PENDING", async () => (await shownStatus(page)) === "PENDING");
  await page.screenshot({ path: `${SHOTS}04-pending.png` });
  await card(page).locator('h2 .status[data-status="ACTIVE"]').waitFor({ timeout: 20_000 });
  await assertNotReloaded(page);
  const sessionId = await card(page).getAttribute("data-session-id");
  const active = server.call("SessionService/GetSession", { id: sessionId }).session;
  const applied = Math.max(...active.resourceIps.map((rule) => Date.parse(rule.appliedAt)));
  const shownActive = Number(await card(page).getAttribute("data-rendered-at"));
  console.log(`ACTIVE reached the page ${shownActive - applied} ms after the server applied the rule (goal: within 200 ms)`);
  assert.equal(await card(page).locator(".addresses").innerText(), BROWSER_ADDRESS);
  assert.match(await card(page).locator(".countdown").innerText(), /ends in/);
  await page.screenshot({ path: `${SHOTS}05-active.png` });

  const expiresBefore = Date.parse(active.expiresAt);
  await card(page).getByRole("button", { name: "Extend by 1 h" }).click();
  await card(page).getByText("Extended.").waitFor();
  const extended = server.call("SessionService/GetSession", { id: sessionId }).session;
  assert.equal(Date.parse(extended.expiresAt) - expiresBefore, 3_600_000, "one hour more");
  await eventually("the countdown shows the new expiry", async () =>
    /ends in 1 h 5\d min/.test(await card(page).locator(".countdown").innerText()),
  );

  // The admin stops it from elsewhere (grpcurl with the admin's key); the page only listens.
  server.call("SessionService/StopSession", { id: sessionId });
  // The first update says the session ended; CANCELLED follows once the rule is removed (the
  // memory firewall takes 2 s), long after, so the rendering time read here is the first one's.
  await card(page).locator(".ended").waitFor();
  const shownEnd = Number(await card(page).getAttribute("data-rendered-at"));
  const ended = Date.parse(server.call("SessionService/GetSession", { id: sessionId }).session.endedAt);
  console.log(`the stop reached the page ${shownEnd - ended} ms after the server ended the session (goal: within 200 ms)`);
  await card(page).locator('h2 .status[data-status="CANCELLED"]').waitFor({ timeout: 20_000 });
  await assertNotReloaded(page);
  assert.match(await card(page).locator(".ended").innerText(), /\(admin\)/);
  await page.screenshot({ path: `${SHOTS}06-cancelled.png` });

  await page.setViewportSize({ width: 375, height: 812 });
  await page.screenshot({ path: `${SHOTS}07-phone.png`, fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than a 375 px screen`);
  await page.context().close();
});

test("on moto's EC2 the rule is in the security group while the session is active, and gone after Stop", async (t) => {
  if (!process.env.PORTCULLIS_TEST_MOTO_URL) {
    if (process.env.CI) assert.fail("PORTCULLIS_TEST_MOTO_URL is not set (scripts/test.sh starts moto)");
    t.skip("PORTCULLIS_TEST_MOTO_URL is not set");
    return;
  }
  const [group] = ec2("create-group", `portcullis-web-${Date.now()}`).group_ids;
  const resource = server.call("ResourceService/CreateResource", {
    resource: {
      name: "ssh-on-ec2",
      awsSecurityGroup: {
        region: "us-east-1",
        groupId: group,
        protocol: "tcp",
        fromPort: 22,
        toPort: 22,
        endpointUrl: process.env.PORTCULLIS_TEST_MOTO_URL,
      },
    },
  }).resource;
  server.call("ResourceService/AssignResource", { resourceId: resource.id, userId: admin().id });

  const page = await newPage();
  await logIn(page, "admin@example.com");
  await markNoReload(page);
  // Only the EC2 resource: every other box unticked.
  for (const box of await page.getByRole("checkbox").all()) {
    const label = await box.evaluate((element) => element.parentElement.textContent);
    await box.setChecked(label.includes("ssh-on-ec2"));
  }
  await page.getByRole("button", { name: "Start" }).click();
  await card(page).locator('h2 .status[data-status="ACTIVE"]').waitFor({ timeout: 30_000 });
  const cidrs = () => ec2("rules", group).map((rule) => rule.cidr);
  assert.deepEqual(cidrs(), [`${BROWSER_ADDRESS}/32`]);
  await page.screenshot({ path: `${SHOTS}08-moto-active.png` });

  await card(page).getByRole("button", { name: "Stop" }).click();
  await card(page).locator('h2 .status[data-status="CANCELLED"]').waitFor({ timeout: 30_000 });
  await assertNotReloaded(page);
  assert.deepEqual(cidrs(), [], "the rule is removed from the security group");
  assert.match(await card(page).locator(".ended").innerText(), /manual/);
  await page.context().close();
});

test("a failed rule shows its error, and Retry applies it once the firewall takes the address", async () => {
  const dave = server.call("UserService/CreateUser", { user: { email: "dave@example.com", role: "ROLE_USER" } }).user;
  memoryResource("steady", 0, dave.id);
  const flaky = memoryResource("flaky", 0, dave.id);
  server.call("ResourceService/UpdateResource", {
    resource: { id: flaky.id, memory: { failAddresses: [BROWSER_ADDRESS] } },
    updateMask: { paths: ["provider"] },
  });
  const page = await newPage();
  await logIn(page, "dave@example.com");
  await page.getByRole("button", { name: "Start" }).click();
  await card(page).locator('h2 .status[data-status="PARTIAL"]').waitFor({ timeout: 20_000 });
  const row = card(page).locator('tr[data-resource="flaky"]');
  await row.locator('[data-status="FAILED"]').waitFor();
  assert.notEqual((await row.locator(".rule-error").innerText()).trim(), "", "the provider's error is shown");
  await page.screenshot({ path: `${SHOTS}09-failed-rule.png` });

  server.call("ResourceService/UpdateResource", {
    resource: { id: flaky.id, memory: {} },
    updateMask: { paths: ["provider"] },
  });
  await row.getByRole("button", { name: "Retry" }).click();
  await row.locator('[data-status="APPLIED"]').waitFor({ timeout: 20_000 });
  await card(page).locator('h2 .status[data-status="ACTIVE"]').waitFor();
  await page.context().close();
});

test("an admin creates a user and assigns them a resource", async () => {
  const resource = memoryResource("web-admin", 0);
  const page = await newPage();
  await logIn(page, "admin@example.com");
  await page.getByRole("link", { name: "Users" }).click();
  await page.getByLabel("Email", { exact: true }).fill("bob@example.com");
  await page.getByLabel("Full name", { exact: true }).fill("Bob Builder");
  await page.getByRole("button", { name: "Create user" }).click();
  await page.locator('tr[data-email="bob@example.com"]').waitFor();
  await page.screenshot({ path: `${SHOTS}10-users.png` });
  const bob = server.call("UserService/ListUsers").users.find((user) => user.email === "bob@example.com");
  assert.equal(bob?.fullName, "Bob Builder");

  await page.getByRole("link", { name: "Resources" }).click();
  await page.getByLabel("Resource", { exact: true }).selectOption({ label: "web-admin" });
  await page.getByLabel("User", { exact: true }).selectOption({ label: "bob@example.com" });
  await page.getByRole("button", { name: "Assign", exact: true }).click();
  await eventually("the table shows bob on web-admin", async () =>
    (await page.locator('tr[data-resource="web-admin"] .holders').innerText()).includes("bob@example.com"),
  );
  await page.screenshot({ path: `${SHOTS}11-assigned.png` });
  const held = server.call("ResourceService/ListResources", { userId: bob.id }).resources ?? [];
  assert.deepEqual(held.map((item) => item.id), [resource.id]);
  await page.context().close();
});

test("a person creates an API key, sees its secret once, and revokes it", async () => {
  server.call("UserService/CreateUser", { user: { email: "erin@example.com", role: "ROLE_USER" } });
  const page = await newPage();
  await logIn(page, "erin@example.com");
  await page.getByRole("link", { name: "Account" }).click();
  await page.getByLabel("Name", { exact: true }).fill("nightly backup job");
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = (await page.locator("code.key").innerText()).trim();
  assert.equal(server.call("UserService/GetCurrentUser", {}, secret).user.email, "erin@example.com", "the key works");
  await page.screenshot({ path: `${SHOTS}16-api-key.png` });

  await page.getByRole("link", { name: "History" }).click();
  await page.getByRole("link", { name: "Account" }).click();
  await page.getByRole("button", { name: "Revoke nightly backup job" }).waitFor();
  assert.equal(await page.locator("code.key").count(), 0, "the secret is shown once");
  await page.getByRole("button", { name: "Revoke nightly backup job" }).click();
  await page.getByText(/^revoked /).waitFor();
  assert.throws(() => server.call("UserService/GetCurrentUser", {}, secret), /Unauthenticated|revoked/i);
  await page.context().close();
});

test("axe-core finds no serious accessibility violation on any section", async () => {
  // axe is injected as a script, which the page's own CSP rightly refuses: this context skips it.
  const page = await newPage({ bypassCSP: true });
  const axe = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
  const check = async (where) => {
    await page.addScriptTag({ content: axe });
    const results = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
    const serious = results.violations.filter((violation) => ["serious", "critical"].includes(violation.impact));
    assert.deepEqual(
      serious.map((violation) => `${violation.id}: ${violation.nodes.map((node) => node.target.join(" ")).join(", ")}`),
      [],
      `serious accessibility violations on ${where}`,
    );
  };
  await page.goto(server.url);
  await page.getByLabel("Email", { exact: true }).waitFor();
  await check("the login form");
  await logIn(page, "admin@example.com");
  for (const section of ["Access", "History", "Account", "Approvals", "Users", "Resources", "Audit"]) {
    await page.getByRole("link", { name: section, exact: true }).click();
    await page.getByRole("heading", { level: 1 }).first().waitFor();
    await page.waitForLoadState("networkidle");
    await check(section);
  }
  await page.context().close();
});

test("an admin logs in through the identity provider and approves a request, which the requester's page sees", async (t) => {
  if (!dex) {
    if (process.env.CI) assert.fail("PORTCULLIS_TEST_DEX is not set (scripts/test.sh builds Dex)");
    t.skip("PORTCULLIS_TEST_DEX is not set");
    return;
  }
  server.call("IdentityProviderService/CreateIdentityProvider", {
    identityProvider: {
      displayName: "Dex",
      issuerUrl: dex.issuer,
      clientId: "portcullis",
      clientSecret: "portcullis-test-secret",
      scopes: ["openid", "email", "profile", "groups", "offline_access"],
      allowedEmailDomains: ["example.com"],
      groupMappings: [{ group: "ops", role: "ROLE_ADMIN" }],
    },
  });

  // The approver: single sign-on in a second tab, this one waiting for it.
  const approver = await newPage();
  await approver.goto(server.url);
  await approver.getByLabel("Email", { exact: true }).fill("admin@example.com");
  await approver.getByRole("button", { name: "Log in with single sign-on" }).click();
  const [idp] = await Promise.all([
    approver.context().waitForEvent("page"),
    approver.getByRole("link", { name: "Open your identity provider" }).click(),
  ]);
  await idp.waitForLoadState();
  await idp.screenshot({ path: `${SHOTS}12-identity-provider.png` });
  await idp.getByLabel(/email|username/i).first().fill("admin@example.com");
  await idp.getByLabel(/password/i).first().fill("password");
  await idp.getByRole("button", { name: /log ?in/i }).click();
  await idp.getByRole("heading", { name: "Logged in" }).waitFor();
  await approver.getByRole("heading", { name: "Your access" }).waitFor();
  await idp.close();

  // Requests need one approval from the IdP's "ops" group, which the approver is now in.
  const carol = server.call("UserService/CreateUser", { user: { email: "carol@example.com", role: "ROLE_USER" } }).user;
  const guarded = server.call("ResourceService/CreateResource", {
    resource: {
      name: "prod-db",
      memory: {},
      approval: { required: true, approverGroups: ["ops"], justificationRequired: true },
    },
  }).resource;
  server.call("ResourceService/AssignResource", { resourceId: guarded.id, userId: carol.id });

  const requester = await newPage();
  await logIn(requester, "carol@example.com");
  await markNoReload(requester);
  await requester.getByLabel("Justification", { exact: true }).fill("INC-42: replica lag");
  await requester.getByRole("button", { name: "Start" }).click();
  await card(requester).locator('h2 .status[data-status="AWAITING_APPROVAL"]').waitFor();
  assert.match(await card(requester).locator(".approval").innerText(), /Waiting for approval \(0\/1\)/);
  await requester.screenshot({ path: `${SHOTS}13-awaiting-approval.png` });

  await approver.getByRole("link", { name: "Approvals" }).click();
  const request = approver.getByRole("article", { name: "Request of carol@example.com" });
  await request.waitFor();
  assert.match(await request.innerText(), /INC-42: replica lag/);
  await request.getByLabel("Reason", { exact: true }).fill("on call");
  await approver.screenshot({ path: `${SHOTS}14-approvals-inbox.png` });
  await request.getByRole("button", { name: "Approve" }).click();
  await approver.getByText("Nothing waits for your decision.").waitFor();

  await card(requester).locator('h2 .status[data-status="ACTIVE"]').waitFor({ timeout: 20_000 });
  await assertNotReloaded(requester);
  assert.match(await card(requester).locator(".approval").innerText(), /approved by admin@example.com: on call/);
  await requester.screenshot({ path: `${SHOTS}15-approved.png` });
  await approver.context().close();
  await requester.context().close();
});
