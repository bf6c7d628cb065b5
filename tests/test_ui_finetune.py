"""The Fine-tune tab in a real browser: preview the data, start a 3-step LoRA job, see the curve and
the before/after results, find the adapter listed there and in Chat's adapter picker, export it to llama.cpp."""

import pytest

pytestmark = pytest.mark.browser


def test_a_three_step_job_finishes_with_an_adapter_listed(browser, studio_server):
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.goto(studio_server, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Fine-tune").click()
    page.wait_for_selector("#ft-start")
    page.click("#ft-preset input")
    page.locator("li", has_text="capital_records").first.click()
    page.wait_for_function("document.querySelector('#ft-data input').value.includes('capital_records.jsonl')",
                           timeout=10_000)
    page.click("#ft-preview-btn")
    page.wait_for_function("document.querySelector('#ft-preview').innerText.includes('200 rows')", timeout=60_000)
    assert "learned: country=" in page.inner_text("#ft-preview")
    page.fill("#ft-max-steps input", "3")
    page.fill("#ft-eval-every input", "3")
    page.fill("#ft-examples input", "2")
    before = page.input_value("#ft-job input")  # the newest earlier job, if any, is shown at first
    page.click("#ft-start")
    try:
        page.wait_for_function("prev => document.querySelector('#ft-job input').value !== prev", arg=before,
                               timeout=30_000)
        name = page.input_value("#ft-job input").split(" · ")[2]  # "id · state · run folder · step"
        assert name.startswith("capital_records-")
        page.wait_for_function("name => { const t = document.querySelector('#ft-status').innerText;"
                               " return t.includes('finished') && t.includes(name); }", arg=name, timeout=240_000)
        page.wait_for_function("document.querySelector('#ft-results').innerText.includes('exact_match')",
                               timeout=30_000)
    except Exception:
        page.screenshot(path="/tmp/ui_finetune_fail.png", full_page=True)
        raise
    status = page.inner_text("#ft-status")
    assert "step 3/3" in status and "generation on smollm2-135m-instruct" in status
    assert page.locator("#ft-plot img, #ft-plot canvas, #ft-plot svg").count() > 0
    results = page.inner_text("#ft-results")
    assert "val_loss" in results and "perplexity" in results
    assert "fine-tuned" in page.inner_text("#ft-examples-table")
    # the base vs fine-tuned outputs wrap inside their panel: nothing to scroll sideways
    widths = page.evaluate("""() => { const t = document.querySelector('#ft-examples-table table');
        let p = t.parentElement; while (p && p.scrollWidth <= p.clientWidth + 2 && p.id !== 'ft-examples-table')
          p = p.parentElement;
        const panel = document.querySelector('#ft-examples-table');
        return [t.getBoundingClientRect().width, panel.getBoundingClientRect().width,
                [...panel.querySelectorAll('*')].filter(e => e.scrollWidth > e.clientWidth + 2
                  && getComputedStyle(e).overflowX !== 'visible').length]; }""")
    assert widths[0] <= widths[1] + 2 and widths[2] == 0, widths
    run = status.split("run folder ")[1].split()[0].strip("`").rsplit("/", 1)[-1]
    assert run == name and run in page.inner_text("#ft-adapters")
    # the Chat tab lists the new adapter in its model settings, without reloading the page
    page.get_by_role("tab", name="Chat").click()
    page.get_by_text("Model", exact=True).first.click()
    page.click("#chat-adapter input")
    page.locator("li", has_text=run).first.click()
    page.wait_for_function("document.querySelector('#chat-backend input').value === 'hf'", timeout=10_000)
    # Export to llama.cpp: the adapter is listed as exported, and picking it again in Chat selects llamacpp
    page.get_by_role("tab", name="Fine-tune").click()
    page.click("#ft-export-gguf")
    page.wait_for_function("document.querySelector('#ft-action-note').innerText.includes('Exported for llama.cpp')",
                           timeout=60_000)
    assert "llama.cpp (exported)" in page.inner_text("#ft-adapters")
    page.get_by_role("tab", name="Chat").click()
    for pick in ("(none)", run):  # (picking the value already shown would change nothing)
        page.click("#chat-adapter input")
        page.locator("ul[role=listbox] li", has_text=pick).first.click()
    page.wait_for_function("document.querySelector('#chat-backend input').value === 'llamacpp'", timeout=10_000)
    page.close()


def test_the_loss_plot_marks_early_stopping():
    from studio.ui.finetune_tab import loss_plot

    events = [{"step": s, "loss": 1 / s} for s in range(1, 9)] + [{"step": s, "val_loss": v}
                                                                     for s, v in ((4, 0.5), (8, 0.6))]
    ax = loss_plot(events, {"early_stopped": True, "best_step": 4}).axes[0]
    assert [line.get_label() for line in ax.get_lines()[:2]] == ["train loss", "validation loss"]
    marker = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(marker) == 1 and list(marker[0].get_xdata()) == [4, 4]
    assert any("early stop (best step 4)" in t.get_text() for t in ax.texts)
    plain = loss_plot(events, {"early_stopped": False, "best_step": 4}).axes[0]
    assert not [line for line in plain.get_lines() if line.get_linestyle() == "--"] and not plain.texts
