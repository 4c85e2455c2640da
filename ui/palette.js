// Colors and display names shared by the map, the legend, the tiles and the charts.

export const CATEGORICAL = [
  "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
  "#bab0ac", "#1f77b4", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf",
];
export const OUTCOME_COLORS = {
  correct: "#3fae7a",
  wrong_class: "#e0453a",
  false_positive: "#f08c00",
  false_negative: "#8e44ad",
  unlabeled: "#a7b0bd",
  no_prediction: "#7aa6d6",
};
export const OUTCOME_NAMES = {
  correct: "correct",
  wrong_class: "wrong",
  false_positive: "false positive",
  false_negative: "false negative",
  unlabeled: "unlabeled",
  no_prediction: "labeled, not judged",
};
export const OUTCOME_ALPHA = { unlabeled: 150, no_prediction: 150 };
// the map colored by what a new model version changed (GET /compare/points)
export const COMPARE_COLORS = {
  fixed: "#12a150",
  broken: "#e0251b",
  still_wrong: "#f08c00",
  still_right: "#98a2b3",
  unlabeled: "#d0d5dd",
  no_prediction: "#d0d5dd",
};
export const COMPARE_NAMES = {
  fixed: "fixed (wrong → right)",
  broken: "broken (right → wrong)",
  still_wrong: "still wrong",
  still_right: "still right",
  unlabeled: "unlabeled",
  no_prediction: "no prediction",
};
export const COMPARE_ALPHA = { fixed: 245, broken: 245, still_wrong: 225, still_right: 150, unlabeled: 70, no_prediction: 70 };
export const NULL_COLOR = "#d0d5dd";
export const SPLIT_COLORS = ["#4e79a7", "#f28e2b", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"];
// viridis, 9 stops
export const RAMP = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"];

export function hexRGB(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

const RAMP_RGB = RAMP.map(hexRGB);

/** the ramp's color at t in [0, 1] */
export function rampRGB(t) {
  const x = Math.max(0, Math.min(1, t)) * (RAMP_RGB.length - 1);
  const i = Math.min(RAMP_RGB.length - 2, Math.floor(x));
  const f = x - i;
  const a = RAMP_RGB[i];
  const b = RAMP_RGB[i + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}
