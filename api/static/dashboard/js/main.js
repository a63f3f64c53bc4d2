// The dashboard's entry point: sign-in, navigation, and the router over the URL's #fragment
// (#/jobs, #/jobs/<id>, #/compare?ids=a,b, #/submit). Each view renders into <main> and
// returns a cleanup function that stops its timers and streams when the page changes.
import { call, clearKey, getKey, setKey } from "./api.js";
import { el } from "./format.js";
import { jobsView } from "./views/jobs.js";
import { jobView } from "./views/job.js";
import { compareView } from "./views/compare.js";
import { submitView } from "./views/submit.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let cleanup = null;

function signinView(root) {
  const input = el("input", { id: "key", type: "password", autocomplete: "off", required: true,
    spellcheck: "false", "aria-describedby": "key-help" });
  const error = el("p", { class: "error", role: "alert" });
  const form = el("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = "";
    setKey(input.value.trim());
    try {
      await call("/v1/fine_tuning/jobs?limit=1", { probe: true });
      route();
    } catch (err) {
      clearKey();
      error.textContent = err.status === 401 ? "This key was not accepted." : `Sign-in failed: ${err.message}`;
      input.focus();
    }
  } },
  el("h1", {}, "Sign in"),
  el("label", { for: "key" }, "API key"),
  input,
  el("p", { id: "key-help", class: "muted" },
    "The key stays in this tab's session storage and is sent only to this server. ",
    "Create one with ", el("code", {}, "python -m store.admin create-key --tenant NAME"),
    "; make demo prints its key."),
  el("button", { type: "submit", class: "primary" }, "Sign in"),
  error);
  root.replaceChildren(el("div", { class: "signin" }, form));
  input.focus();
  return null;
}

function parse() {
  const hash = location.hash.replace(/^#/, "") || "/jobs";
  const [path, query] = hash.split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(query || "") };
}

export function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  const signedIn = Boolean(getKey());
  nav.hidden = !signedIn;
  if (!signedIn) { document.title = "Sign in · paec"; cleanup = signinView(main); return; }
  const { parts, params } = parse();
  for (const a of nav.querySelectorAll("a")) {
    const here = a.getAttribute("href").slice(2) === (parts[0] || "jobs");
    if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  main.replaceChildren();
  if (parts[0] === "jobs" && parts[1]) cleanup = jobView(main, decodeURIComponent(parts[1]), params);
  else if (parts[0] === "compare") cleanup = compareView(main, params);
  else if (parts[0] === "submit") cleanup = submitView(main);
  else cleanup = jobsView(main, params);
  main.focus({ preventScroll: true });
}

document.getElementById("signout").addEventListener("click", () => {
  clearKey();
  location.hash = "#/jobs";
  route();
});
window.addEventListener("paec:unauthorized", () => { clearKey(); route(); });
window.addEventListener("hashchange", route);
route();
