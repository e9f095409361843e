// Home: my live sessions, followed live, and the form that starts one on my resources.
import { api, explain, toDate } from "./api";
import { busy, field, formatTime, h, notice, show, table, words } from "./dom";
import { SessionStatus, type Session } from "./gen/portcullis/v1/session_pb";
import type { Me } from "./me";
import { SessionCard, hoursText } from "./session";

const DURATIONS = [15, 30, 60, 120, 240, 480, 720, 1440, 2880, 10080];
const LIVE = [
  SessionStatus.AWAITING_APPROVAL,
  SessionStatus.PENDING,
  SessionStatus.ACTIVE,
  SessionStatus.PARTIAL,
  SessionStatus.EXPIRING,
];

export async function accessView(main: HTMLElement, me: Me, cards: SessionCard[]): Promise<void> {
  const status = notice();
  const sessions = h("section", { "aria-labelledby": "live-title" }, h("h1", { id: "live-title" }, "Your access"));
  const none = h("p", { class: "muted" }, "No session is open.");
  sessions.append(none);
  show(main, sessions, status.element);

  const follow = (session: Session) => {
    none.remove();
    const card = new SessionCard(session, Math.min(60, me.maxSessionMinutes));
    cards.push(card);
    sessions.append(card.element);
  };
  try {
    const [live, resources] = await Promise.all([
      api.sessions.listSessions({ userId: me.user.id, statuses: LIVE, pageSize: 20 }),
      api.resources.listResources({ userId: me.user.id, pageSize: 200 }),
    ]);
    live.sessions.forEach(follow);
    main.append(startForm(me, resources.resources, follow));
  } catch (error) {
    status.error(explain(error));
  }
}

function startForm(me: Me, resources: { id: string; name: string; description: string }[], follow: (session: Session) => void): HTMLElement {
  const status = notice();
  if (resources.length === 0) {
    return h(
      "section",
      { "aria-labelledby": "start-title" },
      h("h2", { id: "start-title" }, "Start a session"),
      h("p", { class: "muted" }, "No resource is assigned to you yet: ask an administrator."),
    );
  }
  const choices = resources.map((resource) =>
    h("input", { type: "checkbox", name: "resource", value: resource.id, checked: true }),
  );
  const duration = h(
    "select",
    { name: "duration" },
    ...durations(me).map((minutes) =>
      h("option", { value: minutes, selected: minutes === me.defaultSessionMinutes }, hoursText(minutes)),
    ),
  );
  const justification = h("input", { type: "text", name: "justification", maxlength: 1000 });
  const ipv4 = h("input", { type: "text", name: "ipv4", inputmode: "decimal", autocomplete: "off" });
  const ipv6 = h("input", { type: "text", name: "ipv6", autocomplete: "off" });
  const start = h("button", { type: "submit" }, "Start");
  const form = h(
    "form",
    { "aria-labelledby": "start-title", novalidate: true },
    h("h2", { id: "start-title" }, "Start a session"),
    h(
      "fieldset",
      {},
      h("legend", {}, "Resources"),
      ...resources.map((resource, index) =>
        h(
          "label",
          { class: "choice" },
          choices[index],
          ` ${resource.name}`,
          resource.description && h("small", {}, ` ${resource.description}`),
        ),
      ),
    ),
    field("Duration", duration, `At most ${hoursText(me.maxSessionMinutes)} for you.`),
    field("Justification", justification, "Needed for resources that require approval."),
    h(
      "details",
      {},
      h("summary", {}, "Another address"),
      h("p", { class: "muted" }, "Left empty, the address this page connects from is opened."),
      field("IPv4 address", ipv4),
      field("IPv6 address", ipv6),
    ),
    h("div", { class: "actions" }, start),
    status.element,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const resourceIds = choices.filter((choice) => choice.checked).map((choice) => choice.value);
    if (resourceIds.length === 0) {
      status.error("Choose at least one resource.");
      return;
    }
    void busy(start, async () => {
      status.clear();
      try {
        const started = await api.sessions.startSession({
          durationMinutes: Number(duration.value),
          resourceIds,
          justification: justification.value.trim(),
          ipv4Address: ipv4.value.trim() || undefined,
          ipv6Address: ipv6.value.trim() || undefined,
        });
        if (started.session) follow(started.session);
        status.info("Started: your address is being added to the firewalls.");
      } catch (error) {
        status.error(explain(error));
      }
    });
  });
  return form;
}

/** The picker's choices: common lengths up to the caller's maximum, and the maximum itself. */
function durations(me: Me): number[] {
  const choices = DURATIONS.filter((minutes) => minutes <= me.maxSessionMinutes);
  for (const extra of [me.maxSessionMinutes, me.defaultSessionMinutes]) {
    if (extra > 0 && !choices.includes(extra)) choices.push(extra);
  }
  return choices.sort((a, b) => a - b);
}

/** My past and present sessions, newest first. */
export async function historyView(main: HTMLElement, me: Me): Promise<void> {
  const status = notice();
  const body = h("tbody");
  show(
    main,
    h(
      "section",
      { "aria-labelledby": "history-title" },
      h("h1", { id: "history-title" }, "Session history"),
      table(["Started", "Status", "Resources", "Address", "Ended"], body),
      status.element,
    ),
  );
  try {
    const page = await api.sessions.listSessions({ userId: me.user.id, pageSize: 100 });
    if (page.sessions.length === 0) status.info("You have not started a session yet.");
    for (const session of page.sessions) {
      const resources = [...new Set(session.resourceIps.map((rule) => rule.resourceName))].join(", ");
      body.append(
        h(
          "tr",
          {},
          h("td", {}, formatTime(toDate(session.startedAt ?? session.createdAt))),
          h("td", {}, words(SessionStatus[session.status])),
          h("td", {}, resources),
          h("td", {}, [session.ipv4Address, session.ipv6Address].filter(Boolean).join(", ")),
          h("td", {}, formatTime(toDate(session.endedAt))),
        ),
      );
    }
  } catch (error) {
    status.error(explain(error));
  }
}
