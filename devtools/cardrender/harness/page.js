// Runs inside the page after adaptivecards.min.js: renders one card the way a Teams Workflows post
// would be shown, and reports every parse/validation issue, the visible text, buttons and links.
(function () {
  const AC = window.AdaptiveCards;
  // Workflows cards have no bot behind them: Submit/Execute would post to nowhere. Unregistering
  // them makes such a card fail here the way it fails in Teams, instead of rendering a dead button.
  AC.GlobalRegistry.actions.unregister("Action.Submit");
  AC.GlobalRegistry.actions.unregister("Action.Execute");

  function escapeHtml(s) {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }

  // The Markdown subset Teams applies to TextBlock and FactSet text: bold, italic, links, lists.
  // Without a processor the renderer would show raw asterisks, and tests could not notice untrusted
  // text turning into a link.
  function markdown(text) {
    const lines = escapeHtml(text).split(/\r?\n/);
    const out = [];
    let list = false;
    for (const line of lines) {
      const item = /^\s*[-*] (.*)$/.exec(line);
      if (item && !list) { out.push("<ul>"); list = true; }
      if (!item && list) { out.push("</ul>"); list = false; }
      let html = (item ? item[1] : line)
        .replace(/\[([^\]]+)\]\(([^)\s]+)\)/g, '<a href="$2">$1</a>')
        .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
        .replace(/(^|[\s(])_([^_]+)_(?=$|[\s).,])/g, "$1<em>$2</em>")
        .replace(/(^|[\s(])\*([^*]+)\*(?=$|[\s).,])/g, "$1<em>$2</em>");
      out.push(item ? `<li>${html}</li>` : html);
    }
    if (list) out.push("</ul>");
    return `<p>${out.join("<br>").replace(/<br>(<\/?ul>|<li>)/g, "$1").replace(/(<\/ul>|<\/li>)<br>/g, "$1")}</p>`;
  }
  AC.AdaptiveCard.onProcessMarkdown = function (text, result) {
    result.outputHtml = markdown(text);
    result.didProcess = true;
  };

  function describe(e, phaseName) {
    return {
      phase: phaseName || AC.ValidationPhase[e.phase],
      event: AC.ValidationEvent[e.event],
      message: e.message,
    };
  }

  window.renderCard = function (payload, hostConfig) {
    const root = document.getElementById("root");
    root.innerHTML = "";
    const issues = [];
    let json = payload;
    if (payload && payload.type === "message") {
      const att = (payload.attachments || [])[0] || {};
      json = att.content;
    }
    const card = new AC.AdaptiveCard();
    card.hostConfig = new AC.HostConfig(hostConfig);
    const context = new AC.SerializationContext();
    context.targetVersion = AC.Versions.v1_5;
    card.parse(json, context);
    for (let i = 0; i < context.eventCount; i++) issues.push(describe(context.getEventAt(i)));
    for (const e of card.validateProperties().validationEvents) issues.push(describe(e));
    const element = card.render();
    if (element) {
      root.appendChild(element);
    } else {
      issues.push({ phase: "Render", event: "Other", message: "the renderer produced nothing" });
    }
    return {
      issues,
      version: card.version ? card.version.toString() : null,
      text: root.innerText,
      actions: card.getAllActions().map((a) => ({
        type: a.getJsonTypeName(), title: a.title || "", url: a.url || null,
      })),
      anchors: Array.from(root.querySelectorAll("a")).map((a) => ({
        text: a.textContent, href: a.getAttribute("href"),
      })),
    };
  };
})();
