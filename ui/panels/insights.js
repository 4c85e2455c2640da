// "Insights" tab (#tab-insights): label distribution, top confusion pairs and one metadata field by
// outcome, computed over every row, so fetched when the tab is first shown for a dataset. A click on
// a bar or a pair selects its rows (request "filter").

import { describeError, getJSON } from "../api.js";
import { dsPath, metadataFields } from "../data.js";
import { $, busy, h, num, option, pct, showError } from "../dom.js";
import { stackedBars } from "../charts.js";
import { OUTCOME_COLORS, SPLIT_COLORS } from "../palette.js";
import { emit, on, state } from "../state.js";

export function init() {
  on("opened", (info) => {
    $("#meta-field").replaceChildren(...metadataFields().map((m) => option(m)));
    state.insightsLoaded = null;
    if (!$("#tab-insights").hidden) ensureInsights();
  });
  on("tab", (name) => name === "insights" && ensureInsights());
  $("#meta-field").addEventListener("change", (e) => loadMetaChart(e.target.value));
}

function selectByFilters(filters, label) {
  emit("filter", { filters, label });
}

function ensureInsights() {
  if (!state.ds || state.insightsLoaded === state.ds) return;
  state.insightsLoaded = state.ds;
  $("#insights-status").textContent = "computing the statistics…";
  busy(loadInsights())
    .then(() => ($("#insights-status").textContent = ""))
    .catch((err) => {
      state.insightsLoaded = null;
      $("#insights-status").textContent = describeError(err);
      showError(err, "Loading the insights");
    });
}

async function loadInsights() {
  const [labels, confusion] = await Promise.all([getJSON(dsPath("/stats/labels")), getJSON(dsPath("/stats/confusion"))]);
  renderLabelChart(labels);
  renderConfusion(confusion);
  const field = $("#meta-field").value;
  if (field) await loadMetaChart(field);
  else $("#chart-meta").textContent = "This dataset has no metadata fields.";
}

function renderLabelChart(stats) {
  const labeledSplits = stats.splits.filter((s) => s.labeled > 0);
  const pool = stats.splits.filter((s) => s.labeled === 0 && s.rows > 0);
  const legend = labeledSplits.map((s, k) => ({ name: `${s.split} (labels)`, color: SPLIT_COLORS[k % SPLIT_COLORS.length] }));
  if (pool.length) legend.push({ name: "unlabeled (predicted)", color: OUTCOME_COLORS.unlabeled });
  const rows = stats.classes.map((c) => ({
    label: c,
    parts: [
      ...labeledSplits.map((s, k) => ({ name: s.split, value: s.label[c] || 0, color: SPLIT_COLORS[k % SPLIT_COLORS.length] })),
      ...pool.map((s) => ({ name: `${s.split} predicted`, value: s.pred_label[c] || 0, color: OUTCOME_COLORS.unlabeled })),
    ],
  }));
  stackedBars($("#chart-labels"), rows, {
    legend,
    onClick: (row) => selectByFilters([{ field: "label", op: "eq", value: row.label }], `label = ${row.label}`),
  });
}

function renderConfusion(body) {
  const pairs = body.top_errors || [];
  const tbody = $("#confusion-table tbody");
  tbody.replaceChildren();
  if (!pairs.length) tbody.append(h("tr", {}, h("td", { colspan: 4, class: "muted", text: "No labeled errors." })));
  for (const p of pairs.slice(0, 8)) {
    const select = () =>
      selectByFilters(
        [
          { field: "label", op: "eq", value: p.label },
          { field: "pred_label", op: "eq", value: p.pred },
        ],
        `${p.label} predicted as ${p.pred}`
      );
    tbody.append(
      h(
        "tr",
        { title: "select these rows", onclick: select },
        h("td", { text: p.label }),
        h("td", { text: p.pred }),
        h("td", { text: String(p.count) }),
        h("td", { text: body.errors ? pct(p.count / body.errors) : "–" })
      )
    );
  }
  $("#confusion-summary").textContent = body.judged
    ? `${body.errors} errors in ${body.judged} judged rows (accuracy ${pct(body.accuracy)}).`
    : "";
}

async function loadMetaChart(field) {
  try {
    const body = await getJSON(dsPath(`/stats/metadata/${encodeURIComponent(field)}`));
    const numeric = body.kind === "numeric";
    stackedBars($("#chart-meta"), body.bins.map((b) => metaRow(b, numeric)), {
      legend: [
        { name: "correct", color: OUTCOME_COLORS.correct },
        { name: "wrong", color: OUTCOME_COLORS.wrong_class },
        { name: "unlabeled", color: OUTCOME_COLORS.unlabeled },
      ],
      onClick: (row) => {
        const b = row.bin;
        const filters = numeric
          ? [{ field, op: "between", value: [b.lo, b.hi] }]
          : [{ field, op: "eq", value: b.value }];
        selectByFilters(filters, `${field} ${numeric ? `in ${row.label}` : `= ${b.value}`}`);
      },
    });
  } catch (err) {
    $("#chart-meta").textContent = describeError(err);
  }
}

/** one bar of the metadata chart: a value (or a numeric bin) split by outcome */
function metaRow(b, numeric) {
  return {
    label: numeric ? `${num(b.lo, 2)}–${num(b.hi, 2)}` : String(b.value),
    bin: b,
    parts: [
      { name: "correct", value: b.correct, color: OUTCOME_COLORS.correct },
      { name: "wrong", value: b.wrong, color: OUTCOME_COLORS.wrong_class },
      { name: "unlabeled", value: b.unlabeled, color: OUTCOME_COLORS.unlabeled },
      { name: "no prediction", value: b.no_prediction || 0, color: OUTCOME_COLORS.no_prediction },
    ],
    note: b.error_rate === null || b.error_rate === undefined ? "" : `${pct(b.error_rate)} wrong`,
  };
}
