// The khadem_nb queue panel, drawn from the widget's synced values (see panel.py).
// Python sends whole HTML fragments it has escaped (summary, charts) and the bar's values;
// a button click sets `action` to {name, n} (n counts clicks, so the same button twice is
// two changes), which the kernel turns into QueuePanel.act(name).

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "khadem-panel";
  const summary = document.createElement("div");
  summary.className = "khadem-summary";
  const bar = document.createElement("div");
  bar.className = "khadem-progress";
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  const fill = document.createElement("div");
  fill.className = "progress-bar";
  const label = document.createElement("span");
  label.className = "khadem-progress-label";
  bar.append(fill);
  const progress = document.createElement("div");
  progress.className = "khadem-progress-row";
  progress.append(bar, label);
  const buttons = document.createElement("div");
  buttons.className = "khadem-buttons";
  const charts = document.createElement("div");
  root.append(summary, progress, buttons, charts);
  el.append(root);

  let clicks = 0;
  const drawButtons = () => {
    buttons.replaceChildren(...model.get("buttons").map((spec) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "khadem-button";
      button.dataset.action = spec.name;
      button.textContent = spec.label;
      button.title = spec.tip;
      button.disabled = spec.disabled;
      button.addEventListener("click", () => {
        clicks += 1;
        model.set("action", { name: spec.name, n: clicks, at: Date.now() });
        model.save_changes();
      });
      return button;
    }));
  };
  const drawProgress = () => {
    const percent = Math.round(Math.max(0, Math.min(1, model.get("progress"))) * 1000) / 10;
    fill.style.width = `${percent}%`;
    fill.dataset.style = model.get("bar_style");
    bar.setAttribute("aria-valuenow", String(percent));
    label.textContent = model.get("progress_label");
  };
  const drawSummary = () => { summary.innerHTML = model.get("summary"); };
  const drawCharts = () => { charts.innerHTML = model.get("charts"); };

  const handlers = [["summary", drawSummary], ["charts", drawCharts], ["progress", drawProgress],
    ["progress_label", drawProgress], ["bar_style", drawProgress], ["buttons", drawButtons]];
  drawSummary(); drawProgress(); drawButtons(); drawCharts();
  for (const [name, draw] of handlers) model.on(`change:${name}`, draw);
  return () => { for (const [name, draw] of handlers) model.off(`change:${name}`, draw); };
}

export default { render };
