// What the link says: the invite in the fragment (never sent to the server), ?name=NICK,
// &user=NAME, &autojoin=1 (../shared/DESIGN.md), and three for tools and tests
// (&processing=off, &vad=off, ?selftest=).

export interface PageParams {
  invite: string;
  name: string;
  user: string;
  autojoin: boolean;
  /** &processing=off: no echo cancellation, noise suppression or gain control (a file
   * as the microphone, as the CLI's defaults for files); on otherwise. */
  processing: boolean;
  /** &vad=off: no voice gate, every frame goes out while not muted (as the CLI's
   * --vad off); on otherwise. */
  vad: boolean;
  selftest: string;
}

export function pageParams(location: { search: string; hash: string }): PageParams {
  const query = new URLSearchParams(location.search);
  let invite = location.hash.replace(/^#/, "");
  try {
    invite = decodeURIComponent(invite);
  } catch {
    // not percent-encoded: taken as it is (the invite parser judges it)
  }
  return {
    invite: invite.trim(),
    name: query.get("name") ?? "",
    user: query.get("user") ?? "",
    autojoin: query.get("autojoin") === "1",
    processing: query.get("processing") !== "off",
    vad: query.get("vad") !== "off",
    selftest: query.get("selftest") ?? "",
  };
}
