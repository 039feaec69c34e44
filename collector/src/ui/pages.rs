//! The server-rendered pages: one handler per view, each rendering the data its `/api/` twin
//! returns. Flame graphs are drawn by `assets/app.js` from the tree embedded in the page.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::data::{self, Params};
use super::fixes::{self, Fix};
use super::html::{enc, error_box, esc, function_link, page, time, url, window_form, window_pairs};
use super::{Ctx, Shared, UiError};
use crate::query::Window;
use crate::regressions::{self, StoredRegression};
use crate::share::{percent, points};

const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Routes behind authentication.
pub(crate) fn routes() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/", get(services))
        .route("/services", get(services))
        .route("/flame", get(flame))
        .route("/compare", get(compare))
        .route("/function", get(function))
        .route("/regressions", get(regression_list))
        .route("/regressions/{id}", get(regression))
        .route("/fixes/{slug}", get(fix))
        .route("/opportunities", get(opportunities))
}

/// Routes anyone may fetch: the static assets.
pub(crate) fn public_routes() -> Router<Arc<Ctx>> {
    Router::new()
        .route(
            "/assets/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    APP_JS,
                )
            }),
        )
        .route(
            "/assets/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    STYLE_CSS,
                )
            }),
        )
}

/// The form asking for the token; the script stores it in the `fleetprof_token` cookie.
pub(crate) fn login_page(next: String) -> Response {
    let body = format!(
        "<h1>Sign in</h1><p>This collector requires its ingest token.</p>\
         <form id=\"login\" data-next=\"{}\"><label>Token <input type=\"password\" id=\"token\" \
         autocomplete=\"current-password\"></label> <button>Sign in</button></form>",
        esc(&next)
    );
    (StatusCode::UNAUTHORIZED, Html(page("Sign in", "", &body))).into_response()
}

fn respond(title: &str, nav: &str, body: Result<String, UiError>) -> Response {
    match body {
        Ok(b) => Html(page(title, nav, &b)).into_response(),
        Err(e) => {
            let status = e.status();
            if status.is_server_error() {
                tracing::warn!(error = %e, "UI page failed");
            }
            (status, Html(page("Error", nav, &error_box(&e.to_string())))).into_response()
        }
    }
}

/// JSON for a `<script type="application/json">` block (no `</script>` can end it early).
fn script_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "null".into())
        .replace("</", "<\\/")
}

fn window_note(w: Window) -> String {
    format!(
        "<span class=\"window-note\">{} → {}</span>",
        time(w.from),
        time(w.to)
    )
}

async fn services(State(ctx): Shared, Query(p): Query<Params>) -> Response {
    respond("Services", "services", services_body(&ctx, &p).await)
}

async fn services_body(ctx: &Ctx, p: &Params) -> Result<String, UiError> {
    let v = data::services(ctx, p).await?;
    let mut b = format!(
        "<h1>Services</h1>{}{}",
        window_form("/", p, &[]),
        window_note(v.window)
    );
    if v.empty_database {
        b.push_str(
            "<section id=\"empty\" class=\"empty\"><h2>No profiles yet</h2>\
             <p>This database holds no samples. To get data in:</p><ol>\
             <li>Run the collector: <code>fleetprof-collector serve --listen 0.0.0.0:4317 \
             --ui-listen 0.0.0.0:8080</code></li>\
             <li>On every host, as root: <code>fleetprof-profiler run --collector \
             http://COLLECTOR:4317</code>, with <code>FLEETPROF_SERVICE</code> and \
             <code>FLEETPROF_VERSION</code> set in your services' environment.</li>\
             <li>Or see it all on this machine: <code>cargo xtask demo --keep</code> prints the \
             address of a UI with a real regression in it.</li></ol>\
             <p>Samples show up here within seconds of the first batch.</p></section>",
        );
        return Ok(b);
    }
    if v.services.is_empty() {
        b.push_str("<p class=\"empty\">No service has samples in this window: widen it.</p>");
        return Ok(b);
    }
    b.push_str(
        "<table id=\"services\"><thead><tr><th>Service</th><th>CPU (cores)</th><th>Energy</th>\
         <th>Versions</th><th>Hosts</th><th>Samples</th><th>Last seen</th>\
         <th>Open regressions</th><th></th></tr></thead><tbody>",
    );
    for s in &v.services {
        b.push_str(&service_row(p, s));
    }
    b.push_str("</tbody></table>");
    Ok(b)
}

/// One service's row: links to its flame graph, versions, regressions and comparison.
fn service_row(p: &Params, s: &data::ServiceSummary) -> String {
    let [s1, s2, s3] = window_pairs(p);
    let flame = url("/flame", &[("service", Some(&s.service)), s1, s2, s3]);
    let versions: Vec<String> = s
        .versions
        .iter()
        .map(|ver| {
            format!(
                "<a href=\"{}\">{}</a>",
                esc(&url(
                    "/flame",
                    &[
                        ("service", Some(&s.service)),
                        ("version", Some(ver)),
                        s1,
                        s2,
                        s3
                    ]
                )),
                esc(ver)
            )
        })
        .collect();
    let compare = if s.versions.len() > 1 {
        format!(
            "<a href=\"{}\">compare</a>",
            esc(&url(
                "/compare",
                &[("service", Some(&s.service)), s1, s2, s3]
            ))
        )
    } else {
        String::new()
    };
    let open = if s.open_regressions > 0 {
        format!(
            "<a class=\"bad\" href=\"{}\">{}</a>",
            esc(&url(
                "/regressions",
                &[("service", Some(&s.service)), ("state", Some("open"))]
            )),
            s.open_regressions
        )
    } else {
        "0".into()
    };
    let mut b = String::new();
    let _ = write!(
        b,
        "<tr data-service=\"{0}\"><td><a class=\"service\" href=\"{1}\">{0}</a></td>\
         <td class=\"num\">{2:.3}</td><td class=\"num\">{3}</td><td>{4}</td>\
         <td class=\"num\">{5}</td><td class=\"num\">{6}</td><td>{7}</td>\
         <td class=\"num\">{8}</td><td>{9}</td></tr>",
        esc(&s.service),
        esc(&flame),
        s.cores,
        s.watts.map_or_else(
            || "<span class=\"dim\">not measured</span>".into(),
            |w| format!("{w:.1} W")
        ),
        versions.join(" "),
        s.hosts,
        s.samples,
        time(s.last_seen),
        open,
        compare,
    );
    b
}

fn flame_controls(diff: bool) -> String {
    let legend = if diff {
        "<span class=\"legend\"><i class=\"grew\"></i> grew <i class=\"shrank\"></i> shrank \
         (share of the comparison, baseline scaled to its total)</span>"
    } else {
        ""
    };
    format!(
        "<div class=\"controls\"><input id=\"search\" type=\"search\" placeholder=\"Search \
         functions (regex)\" size=\"30\"> <span id=\"match\"></span> \
         <button id=\"reset\" type=\"button\">Reset zoom</button> \
         <label><input id=\"icicle\" type=\"checkbox\"> Icicle</label> {legend}</div>\
         <div id=\"crumbs\"></div><div id=\"flame-box\"><svg id=\"flame\" \
         xmlns=\"http://www.w3.org/2000/svg\"></svg></div><div id=\"tip\"></div>"
    )
}

fn top_table(
    id: &str,
    title: &str,
    p: &Params,
    service: &str,
    rows: &[crate::query::TopRow],
) -> String {
    let mut t = format!(
        "<table id=\"{id}\" class=\"top\"><caption>{title}</caption><thead><tr><th>Function</th>\
         <th>Self</th><th>Total</th></tr></thead><tbody>"
    );
    for r in rows {
        let _ = write!(
            t,
            "<tr data-function=\"{}\"><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&r.function),
            function_link(p, service, &r.function),
            percent(r.self_share),
            percent(r.total_share)
        );
    }
    t.push_str("</tbody></table>");
    t
}

async fn flame(State(ctx): Shared, Query(p): Query<Params>) -> Response {
    let title = format!("{} flame graph", p.get("service").unwrap_or("?"));
    respond(&title, "services", flame_body(&ctx, &p).await)
}

async fn flame_body(ctx: &Ctx, p: &Params) -> Result<String, UiError> {
    let v = data::flame(ctx, p).await?;
    let [s1, s2, s3] = window_pairs(p);
    let svc = Some(v.service.as_str());
    let mut versions = vec![format!(
        "<a href=\"{}\"{}>all</a>",
        esc(&url("/flame", &[("service", svc), s1, s2, s3])),
        if v.version.is_none() {
            " class=\"here\""
        } else {
            ""
        }
    )];
    for ver in &v.versions {
        versions.push(format!(
            "<a href=\"{}\"{}>{}</a>",
            esc(&url(
                "/flame",
                &[("service", svc), ("version", Some(ver)), s1, s2, s3]
            )),
            if v.version.as_deref() == Some(ver) {
                " class=\"here\""
            } else {
                ""
            },
            esc(ver)
        ));
    }
    let compare = if v.versions.len() > 1 {
        format!(
            " · <a href=\"{}\">compare versions</a>",
            esc(&url("/compare", &[("service", svc), s1, s2, s3]))
        )
    } else {
        String::new()
    };
    let mut b = format!(
        "<h1>{} <span class=\"dim\">flame graph</span></h1>{}{} <p>Version: {}{compare} · \
         <a href=\"{}\">regressions</a> · {} samples</p>",
        esc(&v.service),
        window_form("/flame", p, &["service", "version"]),
        window_note(v.window),
        versions.join(" "),
        esc(&url("/regressions", &[("service", svc)])),
        v.total
    );
    if v.total == 0 {
        b.push_str("<p class=\"empty\">No samples of this service in this window.</p>");
        return Ok(b);
    }
    let _ = write!(
        b,
        "<div class=\"with-side\"><section class=\"graph\">{}</section><aside>{}{}</aside></div>\
         <script type=\"application/json\" id=\"flame-data\">{}</script>",
        flame_controls(false),
        top_table(
            "top-self",
            "Top functions by self",
            p,
            &v.service,
            &v.top_self
        ),
        top_table(
            "top-total",
            "Top functions by total",
            p,
            &v.service,
            &v.top_total
        ),
        script_json(&serde_json::json!({
            "diff": false, "total": v.total, "tree": v.tree, "service": v.service,
        })),
    );
    Ok(b)
}

async fn compare(State(ctx): Shared, Query(p): Query<Params>) -> Response {
    let title = format!("{} compare", p.get("service").unwrap_or("?"));
    respond(&title, "services", compare_body(&ctx, &p).await)
}

async fn compare_body(ctx: &Ctx, p: &Params) -> Result<String, UiError> {
    let v = data::compare(ctx, p).await?;
    let options: String = v
        .versions
        .iter()
        .map(|ver| format!("<option value=\"{}\">", esc(ver)))
        .collect();
    let mut hidden = String::new();
    for k in ["service", "since", "from", "to", "by"] {
        if let Some(val) = p.get(k) {
            let _ = write!(
                hidden,
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                esc(val)
            );
        }
    }
    let mut b = format!(
        "<h1>{} <span class=\"dim\">compare</span></h1>\
         <form class=\"sides\" method=\"get\" action=\"/compare\">{hidden}\
         <label>baseline <input name=\"baseline\" list=\"versions\" value=\"{}\"></label> \
         <label>comparison <input name=\"comparison\" list=\"versions\" value=\"{}\"></label> \
         <datalist id=\"versions\">{options}</datalist> <button>Compare</button> \
         <span class=\"dim\">a version, or a window such as <code>2h..1h</code></span></form>{}",
        esc(&v.service),
        esc(&v.baseline),
        esc(&v.comparison),
        window_note(v.window),
    );
    b.push_str(
        "<h2>Functions whose share changed most</h2><table id=\"diff\"><thead><tr><th>Function</th>\
         <th>Self before</th><th>Self after</th><th>Δ self</th><th>Total before</th>\
         <th>Total after</th><th>Δ total</th></tr></thead><tbody>",
    );
    for r in &v.rows {
        let class = |d: f64| {
            if d > 0.0 {
                "grew"
            } else if d < 0.0 {
                "shrank"
            } else {
                ""
            }
        };
        let _ = write!(
            b,
            "<tr data-function=\"{}\" data-delta-self=\"{:.4}\" data-delta-total=\"{:.4}\"><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num {}\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num {}\">{}</td></tr>",
            esc(&r.function),
            // In percentage points, like the cells: the page's readers (and its tests) compare these.
            r.delta_self_share() * 100.0,
            r.delta_total_share() * 100.0,
            function_link(p, &v.service, &r.function),
            percent(r.baseline_self_share),
            percent(r.comparison_self_share),
            class(r.delta_self_share()),
            points(r.delta_self_share()),
            percent(r.baseline_total_share),
            percent(r.comparison_total_share),
            class(r.delta_total_share()),
            points(r.delta_total_share()),
        );
    }
    let _ = write!(
        b,
        "</tbody></table><h2>Differential flame graph</h2><section class=\"graph\">{}</section>\
         <script type=\"application/json\" id=\"flame-data\">{}</script>",
        flame_controls(true),
        script_json(&serde_json::json!({
            "diff": true, "total": v.tree.value, "tree": v.tree, "service": v.service,
        })),
    );
    Ok(b)
}

async fn function(State(ctx): Shared, Query(p): Query<Params>) -> Response {
    let title = p.get("function").unwrap_or("function").to_owned();
    respond(&title, "services", function_body(&ctx, &p).await)
}

/// The cost-over-time chart: total and self share per bucket, deploys and change points marked.
fn history_chart(v: &data::FunctionView) -> String {
    let (w, h, left, bottom) = (900.0, 220.0, 50.0, 30.0);
    let Some(first) = v.history.first().map(|p| p.time) else {
        return "<p class=\"empty\">No samples in this window.</p>".into();
    };
    let last = v.history.last().map_or(first, |p| p.time) + v.bucket_secs;
    let span = f64::from((last - first).max(1));
    let top = v
        .history
        .iter()
        .map(|p| p.total_share)
        // At least a 1% scale, so a cold function's noise does not fill the chart.
        .fold(0.01_f64, f64::max)
        * 1.1;
    let x = |t: u32| left + (f64::from(t.saturating_sub(first)) / span) * (w - left - 10.0);
    let y = |share: f64| (h - bottom) - share / top * (h - bottom - 10.0);
    let line = |f: &dyn Fn(&crate::query::HistoryPoint) -> f64| {
        v.history
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.time + v.bucket_secs / 2), y(f(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut s = format!(
        "<svg id=\"history\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <line class=\"axis\" x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\"/>\
         <line class=\"axis\" x1=\"{left}\" y1=\"10\" x2=\"{left}\" y2=\"{0}\"/>\
         <text x=\"4\" y=\"14\">{2:.1}%</text><text x=\"4\" y=\"{0}\">0%</text>\
         <text x=\"{left}\" y=\"{3}\">{4}</text><text x=\"{1}\" y=\"{3}\" text-anchor=\"end\">{5}</text>",
        h - bottom,
        w - 10.0,
        top * 100.0,
        h - 8.0,
        time(first),
        time(last),
    );
    for d in &v.deploys {
        let _ = write!(
            s,
            "<g class=\"deploy\"><title>deploy {0} at {1}</title><line x1=\"{2:.1}\" x2=\"{2:.1}\" \
             y1=\"10\" y2=\"{3}\"/><text x=\"{4:.1}\" y=\"22\">{0}</text></g>",
            esc(&d.version),
            time(d.at),
            x(d.at),
            h - bottom,
            x(d.at) + 3.0,
        );
    }
    for c in &v.change_points {
        let _ = write!(
            s,
            "<g class=\"change-point\"><title>change point {}: {} → {} ({})</title>\
             <line x1=\"{4:.1}\" x2=\"{4:.1}\" y1=\"10\" y2=\"{5}\"/></g>",
            esc(&c.id),
            percent(c.before_share),
            percent(c.after_share),
            esc(&c.state),
            x(c.time),
            h - bottom,
        );
    }
    let _ = write!(
        s,
        "<polyline class=\"total\" points=\"{}\"/><polyline class=\"self\" points=\"{}\"/></svg>\
         <p class=\"legend\"><i class=\"total\"></i> total share <i class=\"self\"></i> self share \
         <i class=\"deploy\"></i> deploy <i class=\"change-point\"></i> detected change point \
         <span class=\"dim\">({} s buckets)</span></p>",
        line(&|p| p.total_share),
        line(&|p| p.self_share),
        v.bucket_secs
    );
    s
}

async fn function_body(ctx: &Ctx, p: &Params) -> Result<String, UiError> {
    let v = data::function(ctx, p).await?;
    let [s1, s2, s3] = window_pairs(p);
    let svc = Some(v.service.as_str());
    let mut b = format!(
        "<h1>{} <span class=\"dim\">in <a href=\"{}\">{}</a></span></h1>{}{}",
        esc(&v.function),
        esc(&url(
            "/flame",
            &[
                ("service", svc),
                ("search", Some(&regex_literal(&v.function))),
                s1,
                s2,
                s3
            ]
        )),
        esc(&v.service),
        window_form("/function", p, &["service", "function"]),
        window_note(v.window),
    );
    b.push_str("<h2>Cost over time</h2>");
    b.push_str(&history_chart(&v));
    if !v.change_points.is_empty() {
        b.push_str("<p>Change points: ");
        for c in &v.change_points {
            let _ = write!(
                b,
                "<a href=\"/regressions/{}\">{} at {}</a> ({} → {}, {}) ",
                enc(&c.id),
                esc(&c.id),
                time(c.time),
                percent(c.before_share),
                percent(c.after_share),
                esc(&c.state)
            );
        }
        b.push_str("</p>");
    }
    let _ = write!(
        b,
        "<div class=\"pair\">{}{}</div>{}{}",
        neighbours(p, &v.service, "Callers", "callers", &v.callers),
        neighbours(p, &v.service, "Callees", "callees", &v.callees),
        hot_lines(&v.lines),
        stacks_through(&v.function, &v.stacks),
    );
    Ok(b)
}

/// A table of callers or callees.
fn neighbours(
    p: &Params,
    service: &str,
    title: &str,
    id: &str,
    rows: &[crate::query::Neighbour],
) -> String {
    let mut t = format!(
        "<table id=\"{id}\"><caption>{title}</caption><thead><tr><th>Function</th>\
         <th>Samples</th><th>Of this function</th></tr></thead><tbody>"
    );
    for r in rows {
        let _ = write!(
            t,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            function_link(p, service, &r.function),
            r.samples,
            percent(r.share_of_function)
        );
    }
    if rows.is_empty() {
        t.push_str("<tr><td colspan=\"3\" class=\"dim\">none</td></tr>");
    }
    t.push_str("</tbody></table>");
    t
}

/// The function's hottest source lines, or why there are none.
fn hot_lines(lines: &[crate::query::LineRow]) -> String {
    let mut b = String::from("<h2>Hottest lines</h2>");
    if lines.is_empty() {
        b.push_str(
            "<p class=\"dim\">No line information for this function (built without debug info).</p>",
        );
        return b;
    }
    b.push_str(
        "<table id=\"lines\"><thead><tr><th>File:line</th><th>Self samples</th>\
         <th>Total samples</th></tr></thead><tbody>",
    );
    for l in lines {
        let _ = write!(
            b,
            "<tr><td><code>{}:{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&l.file),
            l.line,
            l.self_samples,
            l.total_samples
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// The heaviest stacks through `function`, with it in bold.
fn stacks_through(function: &str, stacks: &[crate::query::StackThrough]) -> String {
    let mut b = String::from(
        "<h2>Stacks through it</h2><table id=\"stacks\"><thead><tr><th>Stack (root → leaf)</th>\
         <th>Samples</th><th>Of this function</th></tr></thead><tbody>",
    );
    for s in stacks {
        let frames: Vec<String> = s
            .functions
            .iter()
            .map(|f| {
                if f == function {
                    format!("<b>{}</b>", esc(f))
                } else {
                    esc(f)
                }
            })
            .collect();
        let _ = write!(
            b,
            "<tr><td class=\"stack\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            frames.join(" → "),
            s.samples,
            percent(s.share_of_function)
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// `name` as a regex matching itself (for the flame graph's search box).
fn regex_literal(name: &str) -> String {
    regex::escape(name)
}

async fn regression_list(State(ctx): Shared, Query(p): Query<Params>) -> Response {
    respond(
        "Regressions",
        "regressions",
        regression_list_body(&ctx, &p).await,
    )
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}

async fn regression_list_body(ctx: &Ctx, p: &Params) -> Result<String, UiError> {
    let rows = data::regression_list(ctx, p).await?;
    let svc = p.get("service");
    let mut b = String::from("<h1>Regressions</h1><p class=\"filters\">");
    for s in ["all", "open", "fixed", "went_away"] {
        let here = p.get("state").unwrap_or("all") == s;
        let _ = write!(
            b,
            "<a href=\"{}\"{}>{}</a> ",
            esc(&url(
                "/regressions",
                &[("service", svc), ("state", Some(s))]
            )),
            if here { " class=\"here\"" } else { "" },
            s.replace('_', " ")
        );
    }
    if let Some(s) = svc {
        let _ = write!(
            b,
            "· service <b>{}</b> (<a href=\"/regressions\">all services</a>)",
            esc(s)
        );
    }
    b.push_str("</p>");
    if rows.is_empty() {
        b.push_str(
            "<p class=\"empty\">No regressions stored. Detection runs with \
             <code>fleetprof-collector detect</code> or <code>serve --detect-every 5m</code>.</p>",
        );
        return Ok(b);
    }
    b.push_str(
        "<table id=\"regressions\"><thead><tr><th>Id</th><th>Service</th><th>Functions</th>\
         <th>State</th><th>Onset</th><th>Cost (cores)</th><th>Share</th><th>Likeliest cause</th>\
         <th>Fix</th></tr></thead><tbody>",
    );
    for row in &rows {
        let r = &row.regression;
        let cause = r.candidates.first().map_or_else(
            || "<span class=\"dim\">none recorded</span>".to_owned(),
            |c| {
                format!(
                    "<code>{}</code> {}",
                    esc(short(&c.change_id)),
                    esc(&c.author)
                )
            },
        );
        let fix = row.fix.as_ref().map_or_else(
            || "<span class=\"dim\">—</span>".to_owned(),
            |slug| format!("<a href=\"/fixes/{}\">proposed</a>", enc(slug)),
        );
        let _ = write!(
            b,
            "<tr data-id=\"{0}\"><td><a href=\"/regressions/{1}\">{0}</a></td><td>{2}</td><td>{3}</td>\
             <td class=\"state {4}\">{4}</td><td>{5}</td><td class=\"num\">{6:+.3}</td>\
             <td class=\"num\">{7} → {8}</td><td>{9}</td><td>{10}</td></tr>",
            esc(&r.id),
            enc(&r.id),
            esc(&r.service),
            r.functions
                .iter()
                .map(|f| function_link(p, &r.service, f))
                .collect::<Vec<_>>()
                .join(", "),
            regressions::state_name(r.state),
            time(r.onset),
            r.cost,
            percent(r.before_share),
            percent(r.after_share),
            cause,
            fix
        );
    }
    b.push_str("</tbody></table>");
    Ok(b)
}

async fn regression(State(ctx): Shared, Path(id): Path<String>) -> Response {
    respond(
        &format!("Regression {id}"),
        "regressions",
        regression_body(&ctx, &id).await,
    )
}

/// Windows just before and after the onset, for the compare view.
fn around(onset: u32, span: u32) -> (String, String) {
    let before = format!("{}..{}", time(onset.saturating_sub(span)), time(onset));
    let after = format!("{}..{}", time(onset), time(onset + span));
    (before, after)
}

async fn regression_body(ctx: &Ctx, id: &str) -> Result<String, UiError> {
    let v = data::regression(ctx, id).await?;
    let r: &StoredRegression = &v.regression;
    let p = Params::default();
    let rel = if r.before_share > 0.0 {
        format!(" ({:+.0}%)", (r.after_share / r.before_share - 1.0) * 100.0)
    } else {
        String::new()
    };
    // Compare the same span on both sides of the onset: as long as the data after it, at most 1 h.
    let span = r.updated.saturating_sub(r.onset).clamp(60, 3600);
    let (before, after) = around(r.onset, span);
    let compare = url(
        "/compare",
        &[
            ("service", Some(&r.service)),
            ("baseline", Some(&before)),
            ("comparison", Some(&after)),
        ],
    );
    let mut b = format!(
        "<h1>Regression <code>{0}</code> <span class=\"state {2}\">{2}</span>{1}</h1>\
         <p class=\"lead\">In <a href=\"{3}\">{4}</a>, <b>{5}</b> went from {6} to {7}{rel} of the \
         service's CPU at {8}: <b>{9:+.3} CPU cores</b>{10}.</p>\
         <p><a id=\"compare-link\" href=\"{11}\">Compare before and after the onset</a> · \
         z = {12:.1} · detected {13} · updated {14}</p>",
        esc(&r.id),
        "",
        regressions::state_name(r.state),
        esc(&url("/flame", &[("service", Some(&r.service))])),
        esc(&r.service),
        r.functions
            .first()
            .map_or_else(String::new, |f| function_link(&p, &r.service, f)),
        percent(r.before_share),
        percent(r.after_share),
        time(r.onset),
        r.cost,
        r.report
            .delta_watts
            .map_or_else(String::new, |w| format!(", {w:+.1} W")),
        esc(&compare),
        r.significance,
        time(r.detected),
        time(r.updated),
    );
    b.push_str(&evidence(r, &p));
    b.push_str(&candidates(r));
    b.push_str("<h2>Fix forward</h2>");
    match &v.fix {
        Some(fix) => b.push_str(&fix_summary(fix)),
        None => {
            let _ = write!(
                b,
                "<p class=\"empty\" id=\"no-fix\">No fix proposed yet. Ask the agent: \
                 <code>fleetprof-agent fix --regression {} --repo PATH --outbox DIR</code>, and start \
                 the UI with <code>--outbox DIR</code> to show it here.</p>",
                esc(&r.id)
            );
        }
    }
    Ok(b)
}

/// The regressed functions: shares, cores and significance of each.
fn evidence(r: &StoredRegression, p: &Params) -> String {
    let mut b = String::new();
    b.push_str(
        "<h2>Evidence</h2><table id=\"members\"><thead><tr><th>Function</th><th>Metric</th>\
         <th>Self before → after</th><th>Total before → after</th><th>Cores before → after</th>\
         <th>z</th><th>p</th><th>Dispersion</th><th>State</th></tr></thead><tbody>",
    );
    for m in &r.report.members {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{} → {}</td><td class=\"num\">{} → {}</td>\
             <td class=\"num\">{:.3} → {:.3}</td><td class=\"num\">{:.1}</td><td class=\"num\">{:.1e}</td>\
             <td class=\"num\">{:.2}</td><td>{}</td></tr>",
            function_link(p, &r.service, &m.function),
            match m.metric {
                crate::detect::Metric::Total => "total",
                crate::detect::Metric::SelfShare => "self",
            },
            percent(m.self_before),
            percent(m.self_after),
            percent(m.total_before),
            percent(m.total_after),
            m.cores_before,
            m.cores_after,
            m.z,
            m.p_value,
            m.dispersion,
            regressions::state_name(m.state),
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// The ranked root-cause candidates: commit, author, score and why.
fn candidates(r: &StoredRegression) -> String {
    let mut b = String::new();
    b.push_str("<h2>Root-cause candidates</h2>");
    if r.candidates.is_empty() {
        b.push_str(
            "<p class=\"empty\">No changes recorded for this service: record them with \
             <code>fleetprof-collector changes import-git</code> and <code>changes deploy</code>, \
             then detect again.</p>",
        );
    } else {
        b.push_str(
            "<table id=\"candidates\"><thead><tr><th>#</th><th>Commit</th><th>Author</th>\
             <th>Title</th><th>Score</th><th>Why</th></tr></thead><tbody>",
        );
        for (i, c) in r.candidates.iter().enumerate() {
            let why: String = c
                .evidence
                .iter()
                .map(|e| format!("<li>{}</li>", esc(e)))
                .collect();
            let _ = write!(
                b,
                "<tr class=\"candidate\" data-commit=\"{0}\"><td>{1}</td><td><code title=\"{0}\">{2}</code></td>\
                 <td class=\"author\">{3}</td><td>{4}</td><td class=\"num\">{5:.2}</td><td><ul>{6}</ul></td></tr>",
                esc(&c.change_id),
                i + 1,
                esc(short(&c.change_id)),
                esc(&c.author),
                esc(&c.title),
                c.score,
                why
            );
        }
        b.push_str("</tbody></table>");
    }
    b
}
/// A proposal's branch, link and validation figures.
fn fix_summary(fix: &Fix) -> String {
    let link = match &fix.pr_url {
        Some(u) => format!(
            "<a id=\"fix-link\" class=\"fix\" href=\"{}\">pull request</a> · \
             <a href=\"/fixes/{}\">proposal</a>",
            esc(u),
            enc(&fix.slug)
        ),
        None => format!(
            "<a id=\"fix-link\" class=\"fix\" href=\"/fixes/{}\">fix-forward PR {}</a>",
            enc(&fix.slug),
            esc(&fix.branch)
        ),
    };
    let mut s = format!(
        "<p class=\"fix-head\">{link} · commit <code>{}</code> · {} · skill <code>{}</code> · {}</p>\
         <table class=\"checks\"><thead><tr><th>Check</th><th>Result</th><th>Seconds</th>\
         <th>Figures</th></tr></thead><tbody>",
        esc(short(&fix.commit)),
        esc(&fix.produced_by),
        esc(&fix.skill),
        if fix.validated() {
            "<b class=\"good\">validated</b>"
        } else {
            "<b class=\"bad\">not validated</b>"
        }
    );
    for c in &fix.checks {
        let _ = write!(
            s,
            "<tr data-step=\"{0}\"><td>{0}</td><td class=\"{1}\">{2}</td><td class=\"num\">{3:.1}</td>\
             <td><code>{4}</code></td></tr>",
            esc(&c.step),
            if c.passed { "good" } else { "bad" },
            if c.passed { "passed" } else { "failed" },
            c.seconds,
            esc(c.summary())
        );
    }
    s.push_str("</tbody></table>");
    s
}

async fn fix(State(ctx): Shared, Path(slug): Path<String>) -> Response {
    let body = match fixes::by_slug(&ctx.config.outboxes, &slug) {
        Some(fix) => {
            let mut b = format!(
                "<h1>Fix <code>{}</code></h1><p>For <a href=\"/regressions/{}\">{}</a></p>{}",
                esc(&fix.branch),
                enc(&fix.id),
                esc(&fix.id),
                fix_summary(&fix)
            );
            if let Some(pr) = fix.pr_text() {
                let _ = write!(
                    b,
                    "<h2>PR.md</h2><pre id=\"pr\" class=\"doc\">{}</pre>",
                    esc(&pr)
                );
            }
            if let Some(patch) = fix.patch() {
                let _ = write!(
                    b,
                    "<h2>fix.patch</h2><pre id=\"patch\" class=\"patch\">{}</pre>",
                    esc(&patch)
                );
            }
            Ok(b)
        }
        None => Err(UiError::NotFound(format!(
            "no proposal {slug} in the outbox"
        ))),
    };
    respond(&format!("Fix {slug}"), "regressions", body)
}

async fn opportunities(State(ctx): Shared, Query(p): Query<Params>) -> Response {
    respond(
        "Opportunities",
        "opportunities",
        opportunities_body(&ctx, &p).await,
    )
}

async fn opportunities_body(ctx: &Ctx, p: &Params) -> Result<String, UiError> {
    let v = data::opportunities(ctx, p).await?;
    let mut b = format!(
        "<h1>Opportunities</h1>{}{}<p>Hot functions showing an opportunity skill's signs in the \
         profile; the agent reads the code to confirm (<code>fleetprof-agent opportunities</code>).</p>",
        window_form("/opportunities", p, &["service"]),
        window_note(v.window)
    );
    if !v.skills_configured {
        b.push_str(
            "<p class=\"empty\">No skills directory: start the UI with <code>--skills DIR</code> \
             (the repository's <code>skills/</code>) to match hot functions against them.</p>",
        );
    } else {
        b.push_str("<details><summary>Skills</summary><ul>");
        for (name, description) in &v.skills {
            let _ = write!(b, "<li><b>{}</b>: {}</li>", esc(name), esc(description));
        }
        b.push_str("</ul></details>");
    }
    if v.rows.is_empty() {
        b.push_str("<p class=\"empty\">No matches in this window.</p>");
        return Ok(b);
    }
    b.push_str(
        "<table id=\"opportunities\"><thead><tr><th>Service</th><th>Function</th><th>Self</th>\
         <th>Total</th><th>Skills</th><th>Proposed change</th></tr></thead><tbody>",
    );
    for o in &v.rows {
        let fix = o.fix.as_ref().map_or_else(
            || "<span class=\"dim\">none yet</span>".to_owned(),
            |f| {
                format!(
                    "<a href=\"/fixes/{}\">{}</a> {}",
                    enc(&f.slug),
                    esc(&f.branch),
                    if f.validated() {
                        "(validated)"
                    } else {
                        "(not validated)"
                    }
                )
            },
        );
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&o.service),
            function_link(p, &o.service, &o.function),
            percent(o.self_share),
            percent(o.total_share),
            esc(&o.skills.join(", ")),
            fix
        );
    }
    b.push_str("</tbody></table>");
    Ok(b)
}
