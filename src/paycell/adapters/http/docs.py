"""The interactive docs page: self-contained HTML (no CDN, works offline) that reads
/openapi.json and renders each operation with a try-it form."""

from typing import Final

DOCS_HTML: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>paycell API</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:960px;padding:1em;color:#222}
h1{margin:.2em 0}.op{border:1px solid #ccc;border-radius:6px;margin:.6em 0}
.op>summary{cursor:pointer;padding:.5em;font-family:monospace}
.m{display:inline-block;width:4em;font-weight:bold}.GET{color:#0a6}.POST{color:#06c}
.body{padding:.5em 1em;border-top:1px solid #eee}label{display:block;margin:.3em 0}
input,textarea{font:13px monospace;width:100%;box-sizing:border-box}
textarea{height:8em}pre{background:#f6f6f6;padding:.5em;overflow:auto;max-height:24em}
table{border-collapse:collapse}td{border:1px solid #ddd;padding:2px 6px;font-size:12px}
</style></head><body>
<h1>paycell REST API</h1><p id="intro"></p>
<label>API key (Bearer) <input id="key" placeholder="admin, user or merchant key"></label>
<div id="ops">loading /openapi.json ...</div>
<h2>Error codes</h2><table id="codes"></table>
<script>
"use strict";
const keyInput = document.getElementById("key");
keyInput.value = localStorage.getItem("paycell-key") || "";
keyInput.onchange = () => localStorage.setItem("paycell-key", keyInput.value);
function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  Object.assign(node, attrs || {});
  for (const kid of kids) node.append(kid);
  return node;
}
function example(schema) {
  const out = {};
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    if ((schema.required || []).includes(name) || prop.example !== undefined)
      out[name] = prop.example !== undefined ? prop.example : (prop.type === "integer" ? 0 : "");
  }
  return JSON.stringify(out, null, 2);
}
function operation(path, method, op) {
  const params = (op.parameters || []).filter(p => p.in !== "header" || p.name === "Idempotency-Key"
    || p.name === "X-Channel-Signature");
  const inputs = {};
  const form = el("div", {className: "body"}, el("p", {textContent: op.summary}),
    el("p", {textContent: "roles: " + (op["x-roles"] || []).join(", ")}));
  for (const p of params) {
    inputs[p.name] = el("input", {placeholder: p.in + (p.required ? " (required)" : "")});
    form.append(el("label", {}, p.name + " ", inputs[p.name]));
  }
  let body = null;
  if (op.requestBody) {
    const schema = op.requestBody.content["application/json"].schema;
    body = el("textarea", {value: example(schema)});
    form.append(el("label", {}, "JSON body", body));
  }
  const output = el("pre", {textContent: ""});
  const send = el("button", {textContent: "Send"});
  send.onclick = async () => {
    let url = path;
    const query = new URLSearchParams();
    const headers = {"Content-Type": "application/json"};
    if (keyInput.value) headers["Authorization"] = "Bearer " + keyInput.value;
    for (const p of params) {
      const value = inputs[p.name].value;
      if (!value) continue;
      if (p.in === "path") url = url.replace("{" + p.name + "}", encodeURIComponent(value));
      else if (p.in === "query") query.set(p.name, value);
      else headers[p.name] = value;
    }
    if ([...query].length) url += "?" + query;
    try {
      const response = await fetch(url, {method: method.toUpperCase(), headers,
        body: body ? body.value : undefined});
      const text = await response.text();
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) {}
      output.textContent = response.status + " " + response.statusText + "\\n" + shown;
    } catch (error) { output.textContent = String(error); }
  };
  const codes = Object.entries(op.responses).map(([s, r]) => s + ": " + r.description).join("\\n");
  form.append(send, output, el("pre", {textContent: codes}));
  return el("details", {className: "op"},
    el("summary", {}, el("span", {className: "m " + method.toUpperCase(),
      textContent: method.toUpperCase()}), path + "  ", el("small", {textContent: op.summary})),
    form);
}
fetch("/openapi.json").then(r => r.json()).then(doc => {
  document.getElementById("intro").textContent = doc.info.description;
  const ops = document.getElementById("ops");
  ops.textContent = "";
  for (const [path, item] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(item)) ops.append(operation(path, method, op));
  const table = document.getElementById("codes");
  for (const [code, info] of Object.entries(doc["x-error-codes"] || {}))
    table.append(el("tr", {}, el("td", {textContent: code}),
      el("td", {textContent: info.status}), el("td", {textContent: info.description})));
});
</script></body></html>
"""
