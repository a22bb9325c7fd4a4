// The page: read the link (invite in the fragment, ?name=, &user=, &autojoin=1), show
// the join form, run a call, and expose window.bangor.state() for tests and tools.

import { fetchConfig, type PageConfig } from "./app/config.ts";
import { Call, type CallState } from "./app/client.ts";
import { audioSelfTest } from "./app/selftest.ts";
import { pageParams } from "./app/params.ts";
import { Ui, type JoinRequest } from "./app/ui.ts";
import { BangorError } from "./wire/errors.ts";

const idle: CallState = {
  joined: false,
  members: [],
  sent_frames: 0,
  received_frames: 0,
  state: "idle",
  room: "",
  you: null,
  verified: {},
  safety_numbers: {},
  chat: [],
  errors: [],
};

async function main(): Promise<void> {
  const ui = new Ui();
  const params = pageParams(window.location);
  let call: Call | null = null;
  let last: CallState = idle;
  let config: PageConfig | null = null;
  const api = {
    state: (): CallState => (call ? call.state() : last),
    selftest: audioSelfTest,
    say: (text: string): void => call?.say(text),
    sentOpus: (): string[] => call?.sentOpus() ?? [],
  };
  (window as unknown as { bangor: typeof api }).bangor = api;
  if (params.selftest) {
    ui.setState("self test page");
    return;
  }

  try {
    config = await fetchConfig();
  } catch (error) {
    ui.setState(error instanceof Error ? error.message : String(error), "error");
    return;
  }
  ui.setState("Not connected");
  ui.showForm(params, config.accounts);

  const join = async (request: JoinRequest): Promise<void> => {
    if (call || !config) return;
    if (!request.invite || !request.name || (config.accounts && !request.user)) {
      ui.showJoinError(
        !request.invite ? "Enter the invite code." : !request.name ? "Enter your name." : "Enter your account name.",
      );
      return;
    }
    ui.setBusy(true);
    // The invite to offer again after the call: the room's owner may change it meanwhile.
    let invite = request.invite;
    try {
      call = await Call.join(request, config, window.location.hostname, {
        processing: params.processing,
        vad: params.vad,
        onState: (text, kind) => ui.setState(text, kind),
        onInvite: (text) => {
          invite = text;
          // A link with the invite in it (the fragment) must open the room after a
          // reload: the old invite no longer does. The fragment never reaches a server.
          if (window.location.hash) history.replaceState(history.state, "", `#${text}`);
        },
        ui,
      });
    } catch (error) {
      ui.setBusy(false);
      const message = error instanceof BangorError || error instanceof Error ? error.message : String(error);
      ui.showJoinError(message);
      ui.setState("Not connected", "error");
      last = { ...idle, state: "error", errors: [message] };
      return;
    }
    call.onEnded = (reason) => {
      if (call) last = { ...call.state(), joined: false, state: "left" };
      call = null;
      ui.setState(reason, reason === "left the room" ? "busy" : "error");
      ui.showForm({ invite, name: request.name, user: request.user }, config?.accounts ?? false);
    };
  };
  ui.onJoin = (request) => void join(request);
  ui.onChat = (text) => call?.say(text);
  ui.onMute = (muted) => call?.setMuted(muted);
  ui.onLeave = () => call?.leave();
  ui.onVolume = (member, percent) => call?.setVolume(member, percent);
  window.addEventListener("pagehide", () => call?.leave());

  if (params.autojoin && params.invite && params.name && !config.accounts) {
    await join({ invite: params.invite, name: params.name, user: params.user, password: "" });
  } else if (params.autojoin && params.invite && params.name) {
    // With accounts the password comes from the form: join once it is typed.
    ui.password.focus();
  }
}

void main();
