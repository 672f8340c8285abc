// The chat page: rooms, members, typing and the connection's state, on
// garou.js. The page's URL may say ?name=alice&rooms=lobby,dev; otherwise
// it asks for a name. It connects over WebTransport where the browser has
// it (the endpoint and its certificate's hash come from
// /webtransport.json, fetched before each connection), else over
// WebSocket; ?transport=websocket makes it use WebSocket only.
import { Client } from "./garou.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const name = params.get("name") || prompt("Your name?") || "guest";
const rooms = (params.get("rooms") || "lobby").split(",").filter(Boolean);
const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/garou";

// webTransport returns the WebTransport endpoint, with the hash of its
// self-signed certificate (which the server replaces every ten days or
// so), or null if the server serves none.
async function webTransport() {
  const rsp = await fetch("/webtransport.json", { cache: "no-store" });
  if (!rsp.ok) return null;
  const c = await rsp.json();
  const hash = new Uint8Array(c.sha256.match(/../g).map((h) => parseInt(h, 16)));
  return { url: c.url, serverCertificateHashes: [{ algorithm: "sha-256", value: hash }] };
}

const chat = new Client(url, { name, rooms, webTransport: params.get("transport") === "websocket" ? undefined : webTransport });
window.chat = chat; // for the console, and the browser tests
let current = rooms[0];
const members = new Map(); // room -> Map(id -> user)
const typists = new Map(); // room -> Map(name -> until)

function line(room, cls, html, seq) {
  const li = document.createElement("li");
  li.dataset.room = room;
  if (seq) li.dataset.seq = seq;
  li.className = cls + (room === current ? "" : " hidden");
  li.append(...html);
  $("log").append(li);
  li.scrollIntoView({ block: "end" });
}

function span(cls, text) {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  return s;
}

function showRooms() {
  $("rooms").replaceChildren(...[...chat.rooms.keys()].map((r) => {
    const b = document.createElement("button");
    b.className = "room" + (r === current ? " current" : "");
    b.dataset.room = r;
    b.textContent = "#" + r;
    b.onclick = () => { current = r; showRooms(); };
    return b;
  }));
  for (const li of $("log").children) li.classList.toggle("hidden", li.dataset.room !== current);
  const m = members.get(current) ?? new Map();
  $("members").replaceChildren(...[...m.values()].map((u) => {
    const li = document.createElement("li");
    li.textContent = u.name;
    return li;
  }));
  showTyping();
}

function showTyping() {
  const now = Date.now();
  const t = [...(typists.get(current) ?? new Map())].filter(([, until]) => until > now).map(([n]) => n);
  $("typing").textContent = t.length ? t.join(", ") + (t.length > 1 ? " are" : " is") + " typing…" : "";
}
setInterval(showTyping, 1000);

chat.addEventListener("state", (e) => {
  const { state, close, delay, transport } = e.detail;
  $("state").textContent = state + (state === "online" && transport ? ` · ${transport}` : "");
  $("state").className = state;
  if (transport) document.body.dataset.transport = transport;
  $("info").textContent = state === "reconnecting" && delay ? `retrying in ${Math.round(delay)} ms` : "";
  document.body.dataset.state = state;
  if (state === "reconnecting" && close !== undefined) line(current, "note", [span("note", "connection lost; resuming…")]);
});
chat.addEventListener("welcome", (e) => { $("me").textContent = "as " + e.detail.user.name; });
chat.addEventListener("joined", (e) => {
  const f = e.detail;
  members.set(f.room, new Map((f.users ?? []).map((u) => [u.id, u])));
  showRooms();
});
chat.addEventListener("text", (e) => {
  const f = e.detail;
  line(f.room, "text", [span("from", (f.from?.name ?? "server") + ": "), span("body", f.text)], f.seq);
  typists.get(f.room)?.delete(f.from?.name);
});
chat.addEventListener("gap", (e) => {
  const f = e.detail;
  line(f.room, "note", [span("note", f.to_seq ? `texts ${f.from_seq}–${f.to_seq} are gone` : "the server lost the room's past")]);
});
chat.addEventListener("presence", (e) => {
  const f = e.detail;
  const m = members.get(f.room) ?? new Map();
  members.set(f.room, m);
  for (const ch of f.changes ?? []) {
    if (ch.op === "join") { m.set(ch.user.id, ch.user); line(f.room, "note", [span("note", `${ch.user.name} joined`)]); }
    if (ch.op === "leave") { m.delete(ch.user.id); line(f.room, "note", [span("note", `${ch.user.name} left (${ch.reason})`)]); }
  }
  showRooms();
});
chat.addEventListener("typing", (e) => {
  const f = e.detail;
  if (!typists.has(f.room)) typists.set(f.room, new Map());
  typists.get(f.room).set(f.from.name, Date.now() + 4000);
  showTyping();
});
chat.addEventListener("error", (e) => line(e.detail.room ?? current, "note", [span("note", "error: " + e.detail.text)]));
chat.addEventListener("bye", (e) => line(current, "note", [span("note", "bye: " + e.detail.text)]));

let lastTyping = 0;
$("text").addEventListener("input", () => {
  if (Date.now() - lastTyping > 2000) { lastTyping = Date.now(); chat.typing(current); }
});
$("sayform").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  lastTyping = 0; // the others stop showing the typing with the text: the next key shows it again
  chat.say(current, text).catch((err) => line(current, "note", [span("note", "not sent: " + err.message)]));
});
$("joinform").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const room = $("newroom").value.trim();
  if (!room) return;
  $("newroom").value = "";
  chat.join(room).then(() => { current = room; showRooms(); })
    .catch((err) => line(current, "note", [span("note", "cannot join: " + err.message)]));
});

showRooms();
chat.connect();
