//! Compact unwind tables from an ELF file's call-frame information (`.eh_frame`, or
//! `.debug_frame` when a file has no `.eh_frame`), in the shape the eBPF unwinder searches.
//!
//! Every FDE's rows are evaluated with gimli and reduced to what an x86-64 unwinder needs: how to
//! compute the CFA (rsp or rbp plus an offset, the PLT expression, or "end of stack") and where
//! rbp was saved. The return address is always at CFA - 8 on x86-64. Gaps between FDEs get a
//! [`cfa_kind::NO_INFO`] row so a pc there is never unwound with a neighbour's rule; consecutive
//! rows with the same rule are merged.

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, RegisterRule,
    UnwindContext, UnwindSection, X86_64,
};
use object::{Object as _, ObjectSection as _};
use profiler_ebpf::{UnwindRow, cfa_kind, rbp_kind};

/// Why no table could be built from a file.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file is not an ELF object this unwinder handles.
    #[error("not an x86-64 ELF file: {0}")]
    NotElf(String),
    /// The call-frame information could not be parsed.
    #[error("malformed call-frame information in {section}: {source}")]
    Cfi {
        /// The section.
        section: &'static str,
        /// gimli's error.
        #[source]
        source: gimli::Error,
    },
}

/// The unwind table of one ELF file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnwindTable {
    /// Rows sorted by `pc`, one per distinct rule.
    pub rows: Vec<UnwindRow>,
    /// FDEs read.
    pub fdes: u64,
    /// FDEs whose body computes the CFA from rbp: a function that keeps a frame pointer.
    pub frame_pointer_fdes: u64,
    /// Rows the unwinder cannot follow (DWARF expressions other than the PLT's, far offsets).
    pub unsupported_rows: u64,
}

impl UnwindTable {
    /// True when nearly every function of the file keeps a frame pointer, so walking by frame
    /// pointers is as good as the table and costs no memory.
    pub fn keeps_frame_pointers(&self) -> bool {
        // Functions without calls may skip the frame setup even when built with frame pointers;
        // a few hand-written ones have no CFI at all.
        self.fdes >= 16 && self.frame_pointer_fdes * 10 >= self.fdes * 9
    }

    /// Bytes the table takes in the kernel.
    pub fn size_bytes(&self) -> usize {
        self.rows.len() * std::mem::size_of::<UnwindRow>()
    }
}

/// Builds the unwind table of an ELF file's bytes.
pub fn build(data: &[u8]) -> Result<UnwindTable, TableError> {
    let file = object::File::parse(data).map_err(|e| TableError::NotElf(e.to_string()))?;
    if file.format() != object::BinaryFormat::Elf
        || file.architecture() != object::Architecture::X86_64
    {
        return Err(TableError::NotElf(format!(
            "{:?} {:?}",
            file.format(),
            file.architecture()
        )));
    }
    let section_addr = |name: &str| file.section_by_name(name).map(|s| s.address());
    let mut bases = BaseAddresses::default();
    if let Some(addr) = section_addr(".text") {
        bases = bases.set_text(addr);
    }
    if let Some(addr) = section_addr(".got") {
        bases = bases.set_got(addr);
    }
    if let Some(addr) = section_addr(".eh_frame_hdr") {
        bases = bases.set_eh_frame_hdr(addr);
    }

    let mut builder = RowBuilder::default();
    let eh_frame = file
        .section_by_name(".eh_frame")
        .and_then(|s| Some((s.address(), s.uncompressed_data().ok()?)));
    match eh_frame {
        Some((addr, bytes)) if !bytes.is_empty() => {
            let bases = bases.set_eh_frame(addr);
            let section = EhFrame::new(&bytes, LittleEndian);
            builder
                .read(&section, &bases)
                .map_err(|source| TableError::Cfi {
                    section: ".eh_frame",
                    source,
                })?;
        }
        _ => {
            if let Some(bytes) = file
                .section_by_name(".debug_frame")
                .and_then(|s| s.uncompressed_data().ok())
            {
                let mut section = DebugFrame::new(&bytes, LittleEndian);
                section.set_address_size(8);
                builder
                    .read(&section, &bases)
                    .map_err(|source| TableError::Cfi {
                        section: ".debug_frame",
                        source,
                    })?;
            }
        }
    }
    Ok(builder.finish())
}

/// Collects rows from FDEs, then sorts and compacts them.
#[derive(Default)]
struct RowBuilder {
    /// (pc, end of the FDE's range, row): the end lets gaps be marked.
    rows: Vec<(u64, u64, UnwindRow)>,
    fdes: u64,
    frame_pointer_fdes: u64,
    unsupported_rows: u64,
}

impl RowBuilder {
    fn read<'a, S>(&mut self, section: &S, bases: &BaseAddresses) -> Result<(), gimli::Error>
    where
        S: UnwindSection<EndianSlice<'a, LittleEndian>>,
    {
        let mut ctx = Box::new(UnwindContext::new());
        let mut entries = section.entries(bases);
        while let Some(entry) = entries.next()? {
            let CieOrFde::Fde(partial) = entry else {
                continue;
            };
            // A corrupt FDE spoils only itself.
            let Ok(fde) = partial.parse(S::cie_from_offset) else {
                continue;
            };
            let fde_end = fde.end_address();
            let Ok(mut table) = fde.rows(section, bases, &mut ctx) else {
                continue;
            };
            self.fdes += 1;
            let mut uses_rbp = false;
            while let Ok(Some(row)) = table.next_row() {
                let (cfa, cfa_offset) = match row.cfa() {
                    CfaRule::RegisterAndOffset { register, offset } => {
                        match (*register, i16::try_from(*offset)) {
                            (X86_64::RSP, Ok(off)) => (cfa_kind::RSP, off),
                            (X86_64::RBP, Ok(off)) => {
                                uses_rbp = true;
                                (cfa_kind::RBP, off)
                            }
                            _ => (cfa_kind::UNSUPPORTED, 0),
                        }
                    }
                    CfaRule::Expression(expr) => {
                        let is_plt = expr
                            .get(section)
                            .map(|e| is_plt_expression(e.0.slice()))
                            .unwrap_or(false);
                        if is_plt {
                            (cfa_kind::PLT, 0)
                        } else {
                            (cfa_kind::UNSUPPORTED, 0)
                        }
                    }
                };
                let cfa = if matches!(row.register(X86_64::RA), Some(RegisterRule::Undefined)) {
                    cfa_kind::END_OF_STACK
                } else {
                    cfa
                };
                let (rbp, rbp_offset) = match row.register(X86_64::RBP) {
                    // No rule: the architecture's default, unchanged for a callee-saved register.
                    None | Some(RegisterRule::Undefined | RegisterRule::SameValue) => {
                        (rbp_kind::UNCHANGED, 0)
                    }
                    Some(RegisterRule::Offset(off)) => match i16::try_from(off) {
                        Ok(off) => (rbp_kind::CFA_OFFSET, off),
                        Err(_) => (rbp_kind::UNSUPPORTED, 0),
                    },
                    _ => (rbp_kind::UNSUPPORTED, 0),
                };
                if cfa == cfa_kind::UNSUPPORTED || rbp == rbp_kind::UNSUPPORTED {
                    self.unsupported_rows += 1;
                }
                let Ok(pc) = u32::try_from(row.start_address()) else {
                    continue;
                };
                let row = UnwindRow::new(pc, cfa, cfa_offset, rbp, rbp_offset);
                if row.rbp_kind() == rbp_kind::UNSUPPORTED && rbp != rbp_kind::UNSUPPORTED {
                    self.unsupported_rows += 1;
                }
                self.rows.push((u64::from(pc), fde_end, row));
            }
            if uses_rbp {
                self.frame_pointer_fdes += 1;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> UnwindTable {
        // Stable: rows of one FDE keep their order.
        self.rows.sort_by_key(|&(pc, ..)| pc);
        let mut rows: Vec<UnwindRow> = Vec::with_capacity(self.rows.len());
        for (i, &(_, fde_end, row)) in self.rows.iter().enumerate() {
            push_row(&mut rows, row);
            let next_pc = self.rows.get(i + 1).map(|&(pc, ..)| pc);
            // After an FDE's last row, nothing covers the addresses up to the next FDE.
            if next_pc.is_none_or(|next| next > fde_end) && u32::try_from(fde_end).is_ok() {
                push_row(&mut rows, gap_row(fde_end));
            }
        }
        UnwindTable {
            rows,
            fdes: self.fdes,
            frame_pointer_fdes: self.frame_pointer_fdes,
            unsupported_rows: self.unsupported_rows,
        }
    }
}

fn gap_row(pc: u64) -> UnwindRow {
    UnwindRow::new(
        u32::try_from(pc).unwrap_or(u32::MAX),
        cfa_kind::NO_INFO,
        0,
        rbp_kind::UNCHANGED,
        0,
    )
}

/// Appends `row`, replacing a row at the same pc (a later FDE starting where an earlier one's gap
/// marker sits) and skipping a row whose rule repeats the previous one.
fn push_row(rows: &mut Vec<UnwindRow>, row: UnwindRow) {
    if let Some(last) = rows.last_mut() {
        if last.pc == row.pc {
            *last = row;
            // Merging may now repeat the row before.
            if rows.len() >= 2 && same_rule(&rows[rows.len() - 2], &row) {
                rows.pop();
            }
            return;
        }
        if same_rule(last, &row) {
            return;
        }
    }
    rows.push(row);
}

fn same_rule(a: &UnwindRow, b: &UnwindRow) -> bool {
    (a.kinds, a.cfa_offset, a.rbp_offset_words) == (b.kinds, b.cfa_offset, b.rbp_offset_words)
}

/// The CFA expression of x86-64 PLT stubs (`.plt`, `.plt.sec`):
/// `DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_lit11|lit10; DW_OP_ge;
/// DW_OP_lit3; DW_OP_shl; DW_OP_plus`.
fn is_plt_expression(expr: &[u8]) -> bool {
    const BREG7: u8 = 0x77;
    const BREG16: u8 = 0x80;
    matches!(
        expr,
        [
            BREG7,
            8,
            BREG16,
            0,
            0x3f,
            0x1a,
            0x3b | 0x3a,
            0x2a,
            0x33,
            0x24,
            0x22
        ]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pc: u32, kind: u8, off: i16) -> UnwindRow {
        UnwindRow::new(pc, kind, off, rbp_kind::UNCHANGED, 0)
    }

    /// Rows of adjacent FDEs with gaps: gaps get NO_INFO, repeats merge.
    #[test]
    fn gaps_are_marked_and_repeats_merged() {
        let b = RowBuilder {
            rows: vec![
                (0x100, 0x120, row(0x100, cfa_kind::RSP, 8)),
                (0x101, 0x120, row(0x101, cfa_kind::RSP, 16)),
                (0x110, 0x120, row(0x110, cfa_kind::RSP, 16)),
                // Adjacent FDE: no gap.
                (0x120, 0x130, row(0x120, cfa_kind::RSP, 8)),
                // Gap from 0x130 to 0x200.
                (0x200, 0x210, row(0x200, cfa_kind::RSP, 8)),
            ],
            ..Default::default()
        };
        let t = b.finish();
        let got: Vec<(u32, u8, i16)> = t
            .rows
            .iter()
            .map(|r| (r.pc, r.cfa_kind(), r.cfa_offset))
            .collect();
        assert_eq!(
            got,
            vec![
                (0x100, cfa_kind::RSP, 8),
                (0x101, cfa_kind::RSP, 16),
                (0x120, cfa_kind::RSP, 8),
                (0x130, cfa_kind::NO_INFO, 0),
                (0x200, cfa_kind::RSP, 8),
                (0x210, cfa_kind::NO_INFO, 0),
            ]
        );
    }

    /// The PLT stub expression is recognised, anything else is not.
    #[test]
    fn plt_expression() {
        assert!(is_plt_expression(&[
            0x77, 8, 0x80, 0, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22
        ]));
        assert!(!is_plt_expression(&[0x77, 8]));
    }

    /// This test binary's own table: sorted, covers `main`-like code, ends with a gap marker,
    /// and the C runtime's `_start` says "end of stack".
    #[test]
    fn builds_from_a_real_binary() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let t = build(&exe).unwrap();
        assert!(t.fdes > 100, "{} FDEs", t.fdes);
        assert!(t.rows.windows(2).all(|w| w[0].pc < w[1].pc));
        assert_eq!(t.rows.last().unwrap().cfa_kind(), cfa_kind::NO_INFO);
        assert!(
            t.rows
                .iter()
                .any(|r| r.cfa_kind() == cfa_kind::END_OF_STACK),
            "no end-of-stack row"
        );
    }

    /// Debian's libc (no frame pointers) yields a table and is not taken for frame-pointer code.
    #[test]
    fn libc_has_a_table() {
        let path = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("libc.so.6");
        let t = build(&std::fs::read(path).unwrap()).unwrap();
        assert!(t.rows.len() > 1000, "{} rows", t.rows.len());
        assert!(!t.keeps_frame_pointers());
        assert!(t.rows.iter().any(|r| r.cfa_kind() == cfa_kind::PLT) || t.unsupported_rows > 0);
    }

    /// Something that is not ELF is refused with a clear error.
    #[test]
    fn refuses_non_elf() {
        assert!(matches!(build(b"not an elf"), Err(TableError::NotElf(_))));
    }
}
