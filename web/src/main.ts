// The page: log in, then sections chosen by the URL's fragment (#/history, #/users, ...), so
// moving between them never reloads the page and never loses the in-memory login.
import { api, explain, setAccessToken, whenLoggedOut } from "./api";
import { accountView } from "./account";
import { accessView, historyView } from "./access";
import { approvalsView, auditView, resourcesView, usersView } from "./admin";
import { h, show } from "./dom";
import { loginView } from "./login";
import type { Me } from "./me";
import type { SessionCard } from "./session";

interface Section {
  path: string;
  title: string;
  /** The permission that shows the section; none: everyone's. */
  permission?: string;
  view: (main: HTMLElement, me: Me, cards: SessionCard[]) => Promise<void>;
}

const SECTIONS: Section[] = [
  { path: "", title: "Access", view: accessView },
  { path: "history", title: "History", view: (main, me) => historyView(main, me) },
  { path: "account", title: "Account", view: (main, me) => accountView(main, me) },
  { path: "approvals", title: "Approvals", permission: "approvals:write", view: (main) => approvalsView(main) },
  { path: "users", title: "Users", permission: "users:write", view: (main, me) => usersView(main, me) },
  { path: "resources", title: "Resources", permission: "resources:write", view: (main) => resourcesView(main) },
  { path: "audit", title: "Audit", permission: "audit:read", view: (main) => auditView(main) },
];

const main = document.getElementById("main")!;
const nav = document.getElementById("nav")!;
const who = document.getElementById("who")!;
let me: Me | undefined;
/** The session cards of the shown view: each holds a stream, closed when the view changes. */
let cards: SessionCard[] = [];

function logIn(why?: string): void {
  me = undefined;
  setAccessToken(undefined);
  leaveView();
  show(nav);
  show(who);
  loginView(main, () => void loggedIn(), why);
}

async function loggedIn(): Promise<void> {
  try {
    const current = await api.users.getCurrentUser({});
    if (!current.user) throw new Error("the server did not say who you are");
    me = {
      user: current.user,
      permissions: current.permissions,
      maxSessionMinutes: current.maxSessionMinutes,
      defaultSessionMinutes: current.defaultSessionMinutes,
    };
  } catch (error) {
    logIn(explain(error));
    return;
  }
  const logOut = h("button", { type: "button", class: "link" }, "Log out");
  logOut.addEventListener("click", () => {
    void api.auth.getCurrentLogin({}).then(
      (login) => login.loginSession && api.auth.closeLoginSession({ id: login.loginSession.id }),
    ).catch(() => undefined).finally(() => logIn("You are logged out."));
  });
  show(who, h("span", { class: "email" }, me.user.email), " ", logOut);
  if (location.hash !== "#/") history.replaceState(null, "", "#/");
  route();
}

function visible(section: Section): boolean {
  return me !== undefined && (section.permission === undefined || me.permissions.includes(section.permission));
}

function leaveView(): void {
  for (const card of cards) card.dispose();
  cards = [];
}

function route(): void {
  if (me === undefined) return;
  const path = location.hash.replace(/^#\/?/, "");
  const section = SECTIONS.find((candidate) => candidate.path === path && visible(candidate)) ?? SECTIONS[0];
  show(
    nav,
    h(
      "ul",
      {},
      ...SECTIONS.filter(visible).map((candidate) =>
        h("li", {}, h("a", { href: `#/${candidate.path}`, "aria-current": candidate === section ? "page" : undefined }, candidate.title)),
      ),
    ),
  );
  leaveView();
  document.title = `Portcullis: ${section.title}`;
  void section.view(main, me, cards);
}

window.addEventListener("hashchange", route);
whenLoggedOut((why) => logIn(`Your login has ended (${why}); log in again.`));
logIn();
