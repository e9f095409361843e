// Logging in: email and a mailed code (with the password first for users who have one), or the
// organization's identity provider in another tab while this one waits for it.
import { api, explain, setAccessToken } from "./api";
import { busy, field, h, notice, show } from "./dom";
import { SsoLoginState, type VerifyLoginResponse } from "./gen/portcullis/v1/auth_pb";

export function loginView(main: HTMLElement, done: (login: VerifyLoginResponse) => void, why?: string): void {
  const status = notice();
  if (why) status.info(why);
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password" });
  const organization = h("input", { type: "text", name: "organization", autocomplete: "off" });
  const send = h("button", { type: "submit" }, "Email me a code");
  const sso = h("button", { type: "button", class: "secondary" }, "Log in with single sign-on");

  const form = h(
    "form",
    { "aria-labelledby": "login-title", novalidate: true },
    h("h1", { id: "login-title" }, "Log in"),
    field("Email", email),
    field("Password", password, "Only if your account has one."),
    h(
      "details",
      {},
      h("summary", {}, "Several organizations?"),
      field("Organization ID", organization, "The mail sent without it lists your organizations."),
    ),
    h("div", { class: "actions" }, send, sso),
    status.element,
    h("p", { class: "muted" }, "This page keeps your login in memory only: reloading it, or a new tab, asks you to log in again."),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!email.value.trim()) {
      status.error("Enter your email address.");
      email.focus();
      return;
    }
    void busy(send, async () => {
      status.clear();
      try {
        const started = await api.auth.startLogin({
          email: email.value.trim(),
          password: password.value === "" ? undefined : password.value,
          organizationId: organization.value.trim(),
        });
        codeView(main, email.value.trim(), started.verificationCodeId, done);
      } catch (error) {
        status.error(explain(error));
      }
    });
  });
  sso.addEventListener("click", () => {
    if (!email.value.trim() && !organization.value.trim()) {
      status.error("Enter your email address (or your organization ID) first.");
      email.focus();
      return;
    }
    void busy(sso, () => ssoLogin(main, email.value.trim(), organization.value.trim(), done, status));
  });
  show(main, form);
  email.focus();
}

function codeView(main: HTMLElement, email: string, codeId: string, done: (login: VerifyLoginResponse) => void): void {
  const status = notice();
  const code = h("input", {
    type: "text",
    name: "code",
    inputmode: "numeric",
    autocomplete: "one-time-code",
    required: true,
  });
  const verify = h("button", { type: "submit" }, "Log in");
  const back = h("button", { type: "button", class: "link" }, "Use another address");
  const form = h(
    "form",
    { "aria-labelledby": "code-title", novalidate: true },
    h("h1", { id: "code-title" }, "Enter the code"),
    h("p", {}, `We mailed a code to ${email}. It works once and soon expires.`),
    field("Code", code),
    h("div", { class: "actions" }, verify, back),
    status.element,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void busy(verify, async () => {
      status.clear();
      try {
        const login = await api.auth.verifyLogin({ verificationCodeId: codeId, code: code.value.trim() });
        finish(login, done);
      } catch (error) {
        // The form stays as it was, so a mistyped code can be corrected.
        status.error(explain(error));
        code.select();
      }
    });
  });
  back.addEventListener("click", () => loginView(main, done));
  show(main, form);
  code.focus();
}

async function ssoLogin(
  main: HTMLElement,
  email: string,
  organizationId: string,
  done: (login: VerifyLoginResponse) => void,
  status: ReturnType<typeof notice>,
): Promise<void> {
  status.clear();
  let started;
  try {
    started = await api.auth.startSsoLogin({ email: organizationId ? "" : email, organizationId });
  } catch (error) {
    status.error(explain(error));
    return;
  }
  const cancel = new AbortController();
  const again = h("button", { type: "button", class: "link" }, "Cancel");
  const waiting = notice();
  waiting.info("Waiting for your identity provider...");
  show(
    main,
    h(
      "section",
      { "aria-labelledby": "sso-title" },
      h("h1", { id: "sso-title" }, "Single sign-on"),
      h(
        "p",
        {},
        "Log in at your identity provider in the new tab; this page continues by itself once you are back. ",
      ),
      h(
        "p",
        {},
        h("a", { href: started.authorizationUrl, target: "_blank", rel: "noopener noreferrer", id: "sso-link" }, "Open your identity provider"),
      ),
      waiting.element,
      again,
    ),
  );
  again.addEventListener("click", () => {
    cancel.abort();
    loginView(main, done);
  });
  try {
    for await (const answer of api.auth.waitSsoLogin(
      { ssoLoginId: started.ssoLoginId, pollSecret: started.pollSecret },
      { signal: cancel.signal },
    )) {
      if (answer.state === SsoLoginState.DONE && answer.login) {
        finish(answer.login, done);
        return;
      }
    }
    waiting.error("The login ended without an answer; start again.");
  } catch (error) {
    if (!cancel.signal.aborted) waiting.error(explain(error));
  }
}

function finish(login: VerifyLoginResponse, done: (login: VerifyLoginResponse) => void): void {
  setAccessToken(login.accessToken);
  done(login);
}
