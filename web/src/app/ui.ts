// The page's DOM: the join form, then the call (members, chat, mute, volumes). Remote
// text (names, chat) only ever goes in through textContent, never as markup, and with the
// characters that could hide or reorder it escaped (text.ts).

import { escapeRemote } from "./text.ts";

export const MAX_CHAT_LINES = 500; // the log keeps this many lines
export const MAX_VOLUME_PERCENT = 400; // as the CLI's /volume

export interface JoinRequest {
  invite: string;
  name: string;
  user: string;
  password: string;
}

export interface MemberView {
  id: number;
  nick: string;
  user: string;
  self: boolean;
  verified: boolean;
  safetyNumber: string | null;
  trust: string;
  rejected: string | null;
  speaking: boolean;
  volume: number; // percent
}

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page lacks #${id}`);
  return el as T;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className = "", text = ""): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = escapeRemote(text);
  return node;
}

export class Ui {
  readonly form = byId<HTMLFormElement>("join");
  readonly invite = byId<HTMLInputElement>("invite");
  readonly name = byId<HTMLInputElement>("name");
  readonly user = byId<HTMLInputElement>("user");
  readonly password = byId<HTMLInputElement>("password");
  readonly joinButton = byId<HTMLButtonElement>("join-button");
  private readonly joinError = byId<HTMLParagraphElement>("join-error");
  private readonly account = byId<HTMLDivElement>("account");
  private readonly state = byId<HTMLParagraphElement>("state");
  private readonly call = byId<HTMLElement>("call");
  private readonly roomTitle = byId<HTMLHeadingElement>("room-title");
  readonly mute = byId<HTMLButtonElement>("mute");
  readonly leave = byId<HTMLButtonElement>("leave");
  private readonly members = byId<HTMLUListElement>("members");
  private readonly chatLog = byId<HTMLOListElement>("chat-log");
  private readonly chatForm = byId<HTMLFormElement>("chat-form");
  readonly chatInput = byId<HTMLInputElement>("chat-input");
  private readonly rows = new Map<number, HTMLLIElement>();

  onJoin: (request: JoinRequest) => void = () => {};
  onChat: (text: string) => void = () => {};
  onMute: (muted: boolean) => void = () => {};
  onLeave: () => void = () => {};
  onVolume: (member: number, percent: number) => void = () => {};

  constructor() {
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.showJoinError("");
      this.onJoin({
        invite: this.invite.value.trim(),
        name: this.name.value.trim(),
        user: this.user.value.trim(),
        password: this.password.value,
      });
    });
    this.chatForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = this.chatInput.value;
      if (!text.trim()) return;
      this.chatInput.value = "";
      this.onChat(text);
    });
    this.mute.addEventListener("click", () => {
      const muted = this.mute.getAttribute("aria-pressed") !== "true";
      this.setMuted(muted);
      this.onMute(muted);
    });
    this.leave.addEventListener("click", () => this.onLeave());
  }

  setState(text: string, kind: "ok" | "busy" | "error" = "busy"): void {
    this.state.textContent = escapeRemote(text);
    this.state.dataset.kind = kind;
  }

  showForm(prefill: { invite: string; name: string; user: string }, accounts: boolean): void {
    if (prefill.invite) this.invite.value = prefill.invite;
    if (prefill.name) this.name.value = prefill.name;
    if (prefill.user) this.user.value = prefill.user;
    this.account.hidden = !accounts;
    this.user.required = accounts;
    this.form.hidden = false;
    this.call.hidden = true;
    this.setBusy(false);
    // Focus the first field still empty: the link may have filled the others.
    const first = [this.invite, this.name, ...(accounts ? [this.user, this.password] : [])].find((i) => !i.value);
    (first ?? this.joinButton).focus();
  }

  setBusy(busy: boolean): void {
    this.joinButton.disabled = busy;
    this.joinButton.textContent = busy ? "Joining…" : "Join";
  }

  showJoinError(message: string): void {
    this.joinError.textContent = escapeRemote(message);
    this.joinError.hidden = !message;
  }

  showCall(room: string): void {
    this.roomTitle.textContent = escapeRemote(room ? `Room ${room}` : "Room");
    this.form.hidden = true;
    this.call.hidden = false;
    this.chatLog.replaceChildren();
    this.members.replaceChildren();
    this.rows.clear();
    this.setMuted(false);
    this.chatInput.focus();
  }

  setMuted(muted: boolean): void {
    this.mute.setAttribute("aria-pressed", String(muted));
    this.mute.textContent = muted ? "Unmute" : "Mute";
  }

  /** Draw one member's row (made on first sight, updated in place after). */
  member(view: MemberView): void {
    let row = this.rows.get(view.id);
    if (!row) {
      row = el("li");
      row.dataset.id = String(view.id);
      const name = el("span", "member-name");
      const trust = el("span", "member-trust");
      const safety = el("span", "safety");
      row.append(name, trust, safety);
      if (!view.self) {
        const volume = el("div", "volume");
        const label = el("label");
        const slider = el("input");
        slider.type = "range";
        slider.min = "0";
        slider.max = String(MAX_VOLUME_PERCENT);
        slider.step = "10";
        slider.id = `volume-${view.id}`;
        label.htmlFor = slider.id;
        slider.addEventListener("input", () => this.onVolume(view.id, Number(slider.value)));
        volume.append(label, slider);
        row.append(volume);
      }
      this.members.append(row);
      this.rows.set(view.id, row);
    }
    const shown = view.user && view.user !== view.nick ? `${view.nick} (${view.user})` : view.nick;
    row.querySelector(".member-name")!.textContent = escapeRemote(view.self ? `${shown} — you` : shown);
    row.classList.toggle("speaking", view.speaking);
    const trust = row.querySelector<HTMLElement>(".member-trust")!;
    trust.dataset.verified = String(view.verified);
    trust.dataset.changed = String(view.trust === "changed");
    trust.textContent = escapeRemote(
      view.self
        ? ""
        : view.rejected
          ? `not verified: ${view.rejected}`
          : !view.verified
            ? "verifying…"
            : view.trust === "changed"
              ? "verified — key changed since last time: compare the safety number"
              : "verified",
    );
    const safety = row.querySelector<HTMLElement>(".safety")!;
    safety.textContent = view.safetyNumber ? `Safety number: ${view.safetyNumber}` : "";
    const label = row.querySelector("label");
    if (label) label.textContent = escapeRemote(`Volume for ${view.nick}: ${view.volume} %`);
    const slider = row.querySelector<HTMLInputElement>("input[type=range]");
    if (slider && document.activeElement !== slider) slider.value = String(view.volume);
  }

  removeMember(id: number): void {
    this.rows.get(id)?.remove();
    this.rows.delete(id);
  }

  chat(from: string, text: string, self = false): void {
    const line = el("li", self ? "mine" : "");
    line.append(el("span", "from", `${from}: `), document.createTextNode(escapeRemote(text)));
    this.appendLine(line);
  }

  notice(text: string): void {
    this.appendLine(el("li", "notice", text));
  }

  private appendLine(line: HTMLLIElement): void {
    const log = this.chatLog;
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(line);
    while (log.childElementCount > MAX_CHAT_LINES) log.firstElementChild?.remove();
    if (atEnd) log.scrollTop = log.scrollHeight;
  }
}
