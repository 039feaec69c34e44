/// Counts the words of each line that are longer than `min`.
pub fn long_words(lines: &[&str], min: usize) -> usize {
    let mut total = 0;
    for line in lines {
        let words: Vec<String> = line.split_whitespace().map(|w| w.to_string()).collect();
        total += words.iter().filter(|w| w.len() > min).count();
    }
    total
}
