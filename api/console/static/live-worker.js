// One Server-Sent Events connection per browser, shared by every console tab (a SharedWorker).
// Browsers allow six HTTP/1.1 connections per host: with a stream per tab, the seventh tab never
// loaded. Each tab connects a port and says hello with the stream's URL and event names; the worker
// opens the stream once, forwards every event to every port, and hands a newly connected tab the
// stream's state and the last event of each kind, so it need not wait for the next one.

const ports = new Set();
const last = new Map(); // event name -> last data (text, as received)
let source = null;
let state = "connecting";

function broadcast(msg) {
  for (const port of ports) port.postMessage(msg);
}

function setState(next) {
  state = next;
  broadcast({ type: "state", state });
}

function open(url, names) {
  if (source) return;
  source = new EventSource(url);
  const forward = (name) => (ev) => {
    last.set(name, ev.data);
    broadcast({ type: "event", name, data: ev.data });
  };
  source.addEventListener("message", forward("message"));
  for (const name of names) source.addEventListener(name, forward(name));
  source.addEventListener("open", () => setState("open"));
  source.addEventListener("error", () => setState(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting"));
}

function closeWhenAlone() {
  if (ports.size || !source) return;
  source.close();
  source = null;
  last.clear();
  state = "connecting";
}

self.addEventListener("connect", (ev) => {
  const port = ev.ports[0];
  port.addEventListener("message", (msg) => {
    const m = msg.data || {};
    if (m.type === "hello") {
      ports.add(port);
      open(m.url, m.names || []);
      port.postMessage({ type: "state", state });
      for (const [name, data] of last) port.postMessage({ type: "event", name, data, replay: true });
    } else if (m.type === "bye") {
      ports.delete(port);
      closeWhenAlone();
    }
  });
  port.start();
});
