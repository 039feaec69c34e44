/// Counts the words of each line that are longer than `min`.
pub fn long_words(lines: &[&str], min: usize) -> usize {
    let mut total = 0;
    let mut words: Vec<&str> = Vec::new();
    for line in lines {
        words.clear();
        words.extend(line.split_whitespace());
        total += words.iter().filter(|w| w.len() > min).count();
    }
    total
}
