//! Sample rows with their stacks' function names: since schema v4 `samples` keeps only the
//! stack's id, and every reader that needs names joins `stacks` the same way, through here.
//!
//! The join sums the sample rows per stack (and the caller's columns) first, so the right side
//! only holds the stacks the window uses (`stack_id IN (...)`), not every stack ever stored.

/// A derived table, to put after `FROM`, of the sample rows matching `sample_where` (a boolean
/// SQL expression over `samples`' columns, without `WHERE`) summed per `columns` and stack, with
/// the stack's `functions` (root first) and the summed `count`: the columns are `columns`,
/// `stack_id`, `functions`, `count`.
///
/// `sample_where` appears twice in the text: bind its values twice, in order.
///
/// ```
/// let sql = fleetprof_collector::store::named_samples("service, time", "service = ?");
/// assert!(sql.contains("ANY INNER JOIN"));
/// ```
pub fn named_samples(columns: &str, sample_where: &str) -> String {
    named_samples_of(columns, sample_where, "")
}

/// [`named_samples`] restricted to the stacks matching `stack_where` (a boolean SQL expression over
/// `stacks`' columns, e.g. [`CUT_STACK`]; empty for every stack): only their sample rows are summed
/// and joined. Binds as [`named_samples`]: `sample_where`'s values twice.
///
/// ```
/// use fleetprof_collector::store::{CUT_STACK, named_samples_of};
/// let sql = named_samples_of("time", "service = ?", CUT_STACK);
/// assert!(sql.contains("[truncated:"));
/// ```
pub fn named_samples_of(columns: &str, sample_where: &str, stack_where: &str) -> String {
    let (left, right) = if stack_where.trim().is_empty() {
        (String::new(), String::new())
    } else {
        (
            format!(" AND stack_id IN (SELECT stack_id FROM stacks WHERE {stack_where})"),
            format!("({stack_where}) AND "),
        )
    };
    let prefix = if columns.trim().is_empty() {
        String::new()
    } else {
        format!("{columns}, ")
    };
    format!(
        "(SELECT {prefix}stack_id, functions, c AS count FROM \
           (SELECT {prefix}stack_id, sum(count) AS c FROM samples WHERE ({sample_where}){left} \
            GROUP BY {prefix}stack_id) \
         ANY INNER JOIN \
           (SELECT stack_id, functions FROM stacks WHERE {right}stack_id IN \
             (SELECT stack_id FROM samples WHERE {sample_where})) \
         USING stack_id)"
    )
}

/// A condition over `stacks` true for the stacks the profiler could not unwind to their root: the
/// root frame is its `[truncated: …]` placeholder (unwinding stopped early: no unwind info, an
/// unreadable stack, a depth limit) or the whole stack is `[stack lost: …]`. How many samples land
/// in such stacks measures unwinding, not code.
pub const CUT_STACK: &str =
    "(startsWith(functions[1], '[truncated:') OR startsWith(functions[1], '[stack lost:'))";
