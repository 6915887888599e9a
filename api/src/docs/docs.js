// Renders /api/docs/openapi.json: every path and method with its parameters, request body and
// responses; schemas are shown resolved one level deep.
"use strict";

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  Object.entries(attributes || {}).forEach(([k, v]) => node.setAttribute(k, v));
  children.forEach((child) => node.append(child));
  return node;
}

function schemaText(spec, schema) {
  if (!schema) return "";
  const ref = schema.$ref;
  if (ref) {
    const name = ref.split("/").pop();
    return name + " " + JSON.stringify(spec.components.schemas[name], null, 2);
  }
  return JSON.stringify(schema, null, 2);
}

function renderOperation(spec, path, method, op) {
  const section = element("section", { class: "op" });
  section.append(element("h3", {}, element("span", { class: "method " + method }, method), " ", element("code", {}, path),
    element("span", { class: "tag" }, (op.tags || []).join(", ") + (op.security ? " · bearer token" : ""))));
  if (op.summary || op.description) section.append(element("p", {}, op.summary || op.description));
  if (op.parameters && op.parameters.length) {
    const table = element("table", {}, element("tr", {}, element("th", {}, "parameter"), element("th", {}, "in"), element("th", {}, "description")));
    op.parameters.forEach((p) => table.append(element("tr", {}, element("td", {}, element("code", {}, p.name)), element("td", {}, p.in), element("td", {}, p.description || ""))));
    section.append(table);
  }
  const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  if (body) section.append(element("p", {}, "Request body"), element("pre", {}, schemaText(spec, body.schema)));
  Object.entries(op.responses || {}).forEach(([status, response]) => {
    const content = response.content && response.content["application/json"];
    const details = element("details", {}, element("summary", {}, status + " " + (response.description || "")));
    if (content) details.append(element("pre", {}, schemaText(spec, content.schema)));
    section.append(details);
  });
  return section;
}

async function render() {
  const main = document.getElementById("paths");
  try {
    const spec = await (await fetch("/api/docs/openapi.json")).json();
    document.getElementById("title").textContent = spec.info.title + " " + spec.info.version;
    document.getElementById("description").textContent = spec.info.description || "";
    main.replaceChildren();
    Object.entries(spec.paths).forEach(([path, item]) => {
      Object.entries(item).forEach(([method, op]) => main.append(renderOperation(spec, path, method, op)));
    });
  } catch (error) {
    main.replaceChildren(element("p", {}, "Cannot load the document: " + error));
  }
}

document.addEventListener("DOMContentLoaded", render);
