// My login sessions (close any) and API keys (create one, its secret shown once; revoke).
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { api, explain, toDate } from "./api";
import { busy, field, formatTime, h, notice, show, table } from "./dom";
import type { Me } from "./me";

/** What a new key may do unless its maker chooses otherwise: run sessions, as CI jobs do. */
const DEFAULT_KEY_PERMISSIONS = ["sessions:read", "sessions:write"];
const KEY_LIFETIMES: [string, number | undefined][] = [
  ["30 days", 30],
  ["90 days", 90],
  ["1 year", 365],
  ["never", undefined],
];

export async function accountView(main: HTMLElement, me: Me): Promise<void> {
  const logins = h("tbody");
  const keys = h("tbody");
  const status = notice();
  const keyName = h("input", { type: "text", name: "key-name", required: true, maxlength: 100 });
  const permissions = me.permissions.map((permission) =>
    h("input", { type: "checkbox", name: "key-permission", value: permission, checked: DEFAULT_KEY_PERMISSIONS.includes(permission) }),
  );
  const lifetime = h("select", { name: "key-lifetime" }, ...KEY_LIFETIMES.map(([label, days]) => h("option", { value: days ?? "" }, label)));
  const create = h("button", { type: "submit" }, "Create key");
  const secret = h("div", { class: "secret", "aria-live": "polite" });
  const keyForm = h(
    "form",
    { "aria-labelledby": "new-key-title", novalidate: true },
    h("h3", { id: "new-key-title" }, "New API key"),
    field("Name", keyName, "What the key is for, e.g. the CI job that uses it."),
    h(
      "fieldset",
      {},
      h("legend", {}, "It may"),
      ...permissions.map((box) => h("label", { class: "choice" }, box, ` ${box.value}`)),
    ),
    field("Expires after", lifetime),
    h("div", { class: "actions" }, create),
    secret,
  );
  show(
    main,
    h(
      "section",
      { "aria-labelledby": "logins-title" },
      h("h1", { id: "logins-title" }, "Your logins"),
      table(["Started", "Address", "Browser", "Last active", ""], logins),
    ),
    h(
      "section",
      { "aria-labelledby": "keys-title" },
      h("h2", { id: "keys-title" }, "API keys"),
      table(["Name", "Prefix", "Created", "Last used", ""], keys),
      keyForm,
    ),
    status.element,
  );

  const load = async () => {
    try {
      const [sessions, apiKeys] = await Promise.all([
        api.auth.listLoginSessions({ pageSize: 100 }),
        api.auth.listApiKeys({ pageSize: 100 }),
      ]);
      logins.replaceChildren(
        ...sessions.loginSessions.map((login) => {
          const close = h("button", { type: "button", class: "small" }, login.current ? "Log out" : "Close");
          close.addEventListener("click", () =>
            void busy(close, async () => {
              try {
                await api.auth.closeLoginSession({ id: login.id });
                if (login.current) location.reload();
                await load();
              } catch (error) {
                status.error(explain(error));
              }
            }),
          );
          const browser = [login.browser?.name, login.operatingSystem?.name].filter(Boolean).join(" on ");
          return h(
            "tr",
            {},
            h("td", {}, formatTime(toDate(login.createdAt)), login.current ? " (this page)" : ""),
            h("td", {}, login.ip),
            h("td", {}, browser || login.userAgent),
            h("td", {}, formatTime(toDate(login.activeAt))),
            h("td", {}, close),
          );
        }),
      );
      keys.replaceChildren(
        ...apiKeys.apiKeys.map((key) => {
          const revoke = h("button", { type: "button", class: "small danger" }, "Revoke");
          revoke.setAttribute("aria-label", `Revoke ${key.name}`);
          revoke.addEventListener("click", () =>
            void busy(revoke, async () => {
              try {
                await api.auth.revokeApiKey({ id: key.id });
                await load();
              } catch (error) {
                status.error(explain(error));
              }
            }),
          );
          return h(
            "tr",
            {},
            h("td", {}, key.name),
            h("td", {}, h("code", {}, key.prefix)),
            h("td", {}, formatTime(toDate(key.createdAt))),
            h("td", {}, key.revokedAt ? `revoked ${formatTime(toDate(key.revokedAt))}` : formatTime(toDate(key.lastUsedAt)) || "never"),
            h("td", {}, key.revokedAt ? "" : revoke),
          );
        }),
      );
    } catch (error) {
      status.error(explain(error));
    }
  };
  keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    void busy(create, async () => {
      secret.replaceChildren();
      try {
        const days = lifetime.value === "" ? undefined : Number(lifetime.value);
        const created = await api.auth.createApiKey({
          name: keyName.value.trim(),
          permissions: permissions.filter((box) => box.checked).map((box) => box.value),
          expiresAt: days === undefined ? undefined : timestampFromDate(new Date(Date.now() + days * 86_400_000)),
        });
        secret.replaceChildren(
          h("p", {}, "Copy the key now: it is not shown again."),
          h("code", { class: "key", tabindex: 0 }, created.secret),
        );
        keyName.value = "";
        await load();
      } catch (error) {
        secret.replaceChildren(h("p", { class: "notice-line error", role: "alert" }, explain(error)));
      }
    });
  });
  await load();
}
