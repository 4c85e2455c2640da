// "Issues" tab (#tab-issues): the table of flagged issues (event "issues"); a click selects the
// issue's rows on the map. (Loading and flagging issues is in data.js: other panels flag too.)

import { $, $$, h, toast } from "../dom.js";
import { indicesOf, on, setSelection } from "../state.js";

export function init() {
  on("issues", renderIssues);
}

function renderIssues(issues) {
  const tbody = $("#issue-table tbody");
  tbody.replaceChildren();
  if (!issues.length) tbody.append(h("tr", {}, h("td", { colspan: 3, class: "muted", text: "No issues flagged yet." })));
  for (const is of [...issues].reverse()) {
    tbody.append(
      h(
        "tr",
        { "data-issue": is.id, onclick: () => openIssue(is) },
        h("td", { text: is.name }),
        h("td", { text: is.count.toLocaleString() }),
        h("td", { class: "muted", text: (is.created_at || "").slice(0, 16).replace("T", " ") })
      )
    );
  }
}

function openIssue(issue) {
  $$("#issue-table tbody tr").forEach((tr) => tr.classList.toggle("on", tr.dataset.issue === issue.id));
  const idx = indicesOf(issue.sample_ids);
  setSelection(idx, `issue “${issue.name}”`, { focus: true });
  const off = issue.sample_ids.length - idx.length;
  if (off > 0) toast(`${off} of the issue's rows are not on the map (not analyzed yet).`);
}
