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
    let prefix = if columns.trim().is_empty() {
        String::new()
    } else {
        format!("{columns}, ")
    };
    format!(
        "(SELECT {prefix}stack_id, functions, c AS count FROM \
           (SELECT {prefix}stack_id, sum(count) AS c FROM samples WHERE {sample_where} \
            GROUP BY {prefix}stack_id) \
         ANY INNER JOIN \
           (SELECT stack_id, functions FROM stacks WHERE stack_id IN \
             (SELECT stack_id FROM samples WHERE {sample_where})) \
         USING stack_id)"
    )
}
