//! Message schemas as data: which sequences and fields each message type allows.
//!
//! A [`SeqSpec`] lists the fields (tag number, allowed options, allowed qualifiers, minimum and
//! maximum occurrences) and child sequences of one `16R` block. An `open` sequence accepts any
//! content: used for the parts of a message we do not check field by field (its fields still
//! get the generic format, character-set and date checks). Field order is not checked.

/// Unbounded repetition.
pub(crate) const MANY: u8 = u8::MAX;

/// One allowed field (by tag number and qualifier).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FieldSpec {
    pub number: &'static str,
    pub options: &'static str,
    /// Empty: the field has no qualifier (or any qualifier is accepted).
    pub qualifiers: &'static [&'static str],
    pub min: u8,
    pub max: u8,
}

/// One allowed sequence.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeqSpec {
    pub name: &'static str,
    pub min: u8,
    pub max: u8,
    pub open: bool,
    pub fields: &'static [FieldSpec],
    pub children: &'static [SeqSpec],
}

const fn field(
    number: &'static str,
    options: &'static str,
    qualifiers: &'static [&'static str],
    min: u8,
    max: u8,
) -> FieldSpec {
    FieldSpec {
        number,
        options,
        qualifiers,
        min,
        max,
    }
}

const fn seq(
    name: &'static str,
    min: u8,
    max: u8,
    fields: &'static [FieldSpec],
    children: &'static [SeqSpec],
) -> SeqSpec {
    SeqSpec {
        name,
        min,
        max,
        open: false,
        fields,
        children,
    }
}

const fn open(name: &'static str, min: u8, max: u8) -> SeqSpec {
    SeqSpec {
        name,
        min,
        max,
        open: true,
        fields: &[],
        children: &[],
    }
}

const LINK_REFERENCES: &[&str] = &[
    "RELA", "PREV", "POOL", "COMM", "COLR", "CORP", "TRRF", "CLCI", "TRCI", "MITI", "PCTI", "CMIT",
    "BMRB", "BLRB", "ALMR", "ALMT", "TCTI", "INDX", "ICUR", "TRAN", "PREA",
];

const LINK: SeqSpec = seq(
    "LINK",
    0,
    MANY,
    &[
        field("22", "F", &["LINK"], 0, 1),
        field("13", "AB", &["LINK"], 0, 1),
        field("20", "CU", LINK_REFERENCES, 1, 1),
        field("36", "B", &["PAIR", "TURN"], 0, 2),
    ],
    &[],
);

const GENL_SETTLEMENT: SeqSpec = seq(
    "GENL",
    1,
    1,
    &[
        field("20", "C", &["SEME"], 1, 1),
        field("23", "G", &[], 1, 1),
        field("98", "ACE", &["PREP"], 0, 1),
        field("99", "B", &["SETT", "TOSE"], 0, 2),
    ],
    &[LINK],
);

const TRADDET_FIELDS_COMMON: [FieldSpec; 9] = [
    field("94", "BCFHL", &["TRAD", "CLEA", "SAFE"], 0, 3),
    field("98", "ABCE", &["TRAD"], 0, 1),
    field("90", "AB", &["DEAL"], 0, 1),
    field("99", "A", &["DAAC"], 0, 1),
    field("35", "B", &[], 1, 1),
    field(
        "22",
        "F",
        &[
            "PROC", "RPOR", "PRIC", "PRIR", "BORR", "TTCO", "INCA", "TRTR", "PRSS", "PROC",
        ],
        0,
        10,
    ),
    field("11", "A", &["FXIS"], 0, 1),
    field("25", "D", &["AFFM", "MTCH"], 0, 2),
    field("70", "E", &["FXIN", "SPRO", "TPRO"], 0, 3),
];

const TRADDET_INSTRUCTION: SeqSpec = seq(
    "TRADDET",
    1,
    1,
    &[
        TRADDET_FIELDS_COMMON[0],
        TRADDET_FIELDS_COMMON[1],
        TRADDET_FIELDS_COMMON[2],
        TRADDET_FIELDS_COMMON[3],
        TRADDET_FIELDS_COMMON[4],
        TRADDET_FIELDS_COMMON[5],
        TRADDET_FIELDS_COMMON[6],
        TRADDET_FIELDS_COMMON[7],
        TRADDET_FIELDS_COMMON[8],
        field("98", "ABCE", &["SETT"], 1, 1),
        field("98", "ABCE", &["ADEL"], 0, 1),
    ],
    &[open("FIA", 0, 1)],
);

const TRADDET_CONFIRMATION: SeqSpec = seq(
    "TRADDET",
    1,
    1,
    &[
        TRADDET_FIELDS_COMMON[0],
        TRADDET_FIELDS_COMMON[1],
        TRADDET_FIELDS_COMMON[2],
        TRADDET_FIELDS_COMMON[3],
        TRADDET_FIELDS_COMMON[4],
        TRADDET_FIELDS_COMMON[5],
        TRADDET_FIELDS_COMMON[6],
        TRADDET_FIELDS_COMMON[7],
        TRADDET_FIELDS_COMMON[8],
        field("98", "ABC", &["ESET"], 1, 1),
        field("98", "ABCE", &["SETT", "ADEL"], 0, 2),
    ],
    &[open("FIA", 0, 1)],
);

const FIAC_INSTRUCTION: SeqSpec = seq(
    "FIAC",
    1,
    1,
    &[
        field("36", "BD", &["SETT"], 1, 20),
        field("70", "D", &["DENC"], 0, 1),
        field("95", "PQRS", &["ACOW"], 0, 1),
        field("97", "ABDE", &["SAFE"], 1, 1),
        field("97", "ABE", &["CASH"], 0, 1),
        field("94", "BCFL", &["SAFE"], 0, 1),
    ],
    &[open("BREAK", 0, MANY)],
);

const FIAC_CONFIRMATION: SeqSpec = seq(
    "FIAC",
    1,
    1,
    &[
        field("36", "BD", &["ESTT"], 1, 20),
        field("36", "BD", &["PSTT", "RSTT", "PREV"], 0, 3),
        field("19", "A", &["PSTT", "RSTT"], 0, 2),
        field("70", "D", &["DENC"], 0, 1),
        field("95", "PQRS", &["ACOW"], 0, 1),
        field("97", "ABDE", &["SAFE"], 1, 1),
        field("97", "ABE", &["CASH"], 0, 1),
        field("94", "BCFL", &["SAFE"], 0, 1),
    ],
    &[open("BREAK", 0, MANY)],
);

const PARTY_QUALIFIERS: &[&str] = &[
    "DEAG", "REAG", "DECU", "RECU", "DEI1", "DEI2", "REI1", "REI2", "SELL", "BUYR", "PSET", "ALTE",
];

const SETPRTY: SeqSpec = seq(
    "SETPRTY",
    1,
    MANY,
    &[
        field("95", "CPQRS", PARTY_QUALIFIERS, 1, 1),
        field("97", "ABDE", &["SAFE", "CASH"], 0, 2),
        field("98", "AC", &["PROC"], 0, 1),
        field("20", "CD", &["PROC"], 0, 1),
        field("70", "CDE", &["DECL", "PACO", "REGI"], 0, 3),
        field("22", "F", &["STCO"], 0, 1),
    ],
    &[],
);

const AMOUNT_QUALIFIERS: &[&str] = &[
    "SETT", "ESTT", "DEAL", "ACRU", "CHAR", "COUN", "DSCA", "EXEC", "ISDI", "LADT", "LEVY", "LOCL",
    "LOCO", "MARG", "OTHR", "REGF", "SHIP", "SPCN", "STAM", "STEX", "TRAN", "TRAX", "VATA", "WITH",
    "ANTO", "BOOK", "COAX", "ACCA", "RESU", "OCMT", "ERFE", "CDTA", "RSCH",
];

const AMT: SeqSpec = seq(
    "AMT",
    0,
    MANY,
    &[
        field("17", "B", &["ACRU", "STAM"], 0, 2),
        field("19", "A", AMOUNT_QUALIFIERS, 1, 1),
        field("98", "AC", &["VALU"], 0, 1),
        field("92", "B", &["EXCH"], 0, 1),
    ],
    &[],
);

const SETDET: SeqSpec = seq(
    "SETDET",
    1,
    1,
    &[
        field("22", "F", &["SETR"], 1, 1),
        field(
            "22",
            "F",
            &[
                "STCO", "BENE", "CASY", "DBNM", "TCPI", "CCPT", "FXCX", "REST", "RTGS", "REGT",
                "PACK", "PRSS", "LEOG", "SETS", "NETT", "STAM", "TRAK", "PRIR", "PARL", "MANT",
                "BLOC", "REPT", "CSBT", "TRCA",
            ],
            0,
            20,
        ),
    ],
    &[SETPRTY, open("CSHPRTY", 0, MANY), AMT],
);

/// MT540–543.
pub(crate) const SETTLEMENT_INSTRUCTION: &[SeqSpec] = &[
    GENL_SETTLEMENT,
    TRADDET_INSTRUCTION,
    FIAC_INSTRUCTION,
    open("REPO", 0, 1),
    SETDET,
    open("OTHRPRTY", 0, MANY),
    open("ADDINFO", 0, 1),
];

/// MT544–547.
pub(crate) const SETTLEMENT_CONFIRMATION: &[SeqSpec] = &[
    GENL_SETTLEMENT,
    TRADDET_CONFIRMATION,
    FIAC_CONFIRMATION,
    open("REPO", 0, 1),
    SETDET,
    open("OTHRPRTY", 0, MANY),
    open("ADDINFO", 0, 1),
];

/// `25D` status qualifiers of MT548.
pub(crate) const STATUS_QUALIFIERS: &[&str] = &[
    "IPRC", "MTCH", "SETT", "CPRC", "INMH", "AFFM", "ALOC", "SPRC", "TPRC", "RPRC", "EPRC", "PPRC",
    "CALL", "REPR", "CALL", "MODP", "RREP", "SETT",
];

/// `24B` reason qualifiers of MT548.
pub(crate) const REASON_QUALIFIERS: &[&str] = &[
    "PEND", "PENF", "NMAT", "REJT", "CAND", "CANP", "DEND", "PACK", "PPRC", "REPR", "CPRC", "MOPN",
    "MODP", "MDPN", "INMH", "CALL", "REPA", "RREJ",
];

const REAS: SeqSpec = seq(
    "REAS",
    0,
    MANY,
    &[
        field("24", "B", REASON_QUALIFIERS, 1, 1),
        field("70", "D", &["REAS"], 0, 1),
    ],
    &[],
);

const STAT: SeqSpec = seq(
    "STAT",
    1,
    MANY,
    &[field("25", "D", STATUS_QUALIFIERS, 1, 1)],
    &[REAS],
);

const GENL_STATUS: SeqSpec = seq(
    "GENL",
    1,
    1,
    &[
        field("20", "C", &["SEME"], 1, 1),
        field("23", "G", &[], 1, 1),
        field("98", "ACE", &["PREP"], 0, 1),
    ],
    &[SeqSpec { min: 1, ..LINK }, STAT],
);

const SETTRAN: SeqSpec = seq(
    "SETTRAN",
    0,
    1,
    &[
        field("35", "B", &[], 1, 1),
        field("36", "BD", &["SETT"], 1, 20),
        field("19", "A", &[], 0, 10),
        field("95", "LPR", &["ACOW"], 0, 1),
        field("97", "ABE", &["SAFE", "CASH"], 1, 2),
        field("94", "BCFL", &["SAFE", "TRAD", "CLEA"], 0, 3),
        field("22", "FH", &[], 1, 20),
        field("98", "ABCE", &[], 1, 10),
        field("70", "E", &["SPRO"], 0, 1),
    ],
    &[
        open("FIA", 0, 1),
        open("REPO", 0, 1),
        open("SETPRTY", 0, MANY),
        open("CSHPRTY", 0, MANY),
        open("AMT", 0, MANY),
    ],
);

/// MT548.
pub(crate) const STATUS_ADVICE: &[SeqSpec] = &[GENL_STATUS, SETTRAN, open("ADDINFO", 0, 1)];

const STATEMENT_COMMON: [FieldSpec; 6] = [
    field("28", "E", &[], 1, 1),
    field("13", "AJ", &["STAT"], 0, 1),
    field("20", "C", &["SEME"], 1, 1),
    field("23", "G", &[], 1, 1),
    field("98", "ACE", &["PREP"], 0, 1),
    field("95", "LPR", &["ACOW"], 0, 1),
];

const GENL_535: SeqSpec = seq(
    "GENL",
    1,
    1,
    &[
        STATEMENT_COMMON[0],
        STATEMENT_COMMON[1],
        STATEMENT_COMMON[2],
        STATEMENT_COMMON[3],
        STATEMENT_COMMON[4],
        STATEMENT_COMMON[5],
        field("98", "ABC", &["STAT"], 1, 1),
        field("22", "F", &["SFRE"], 1, 1),
        field("22", "F", &["CODE"], 1, 1),
        field("22", "F", &["STTY"], 1, 1),
        field("22", "F", &["STBA"], 1, 1),
        field("97", "ABD", &["SAFE"], 1, 1),
        field("17", "B", &["ACTI"], 1, 1),
        field("17", "B", &["AUDT"], 0, 1),
        field("17", "B", &["CONS"], 1, 1),
    ],
    &[open("LINK", 0, MANY)],
);

const FIN_535: SeqSpec = seq(
    "FIN",
    0,
    MANY,
    &[
        field("35", "B", &[], 1, 1),
        field("90", "ABE", &["MRKT", "INDC", "SMKT"], 0, 3),
        field("94", "B", &["PRIC"], 0, 1),
        field("98", "ABC", &["PRIC"], 0, 1),
        field("99", "A", &["DAAC"], 0, 1),
        field("93", "BC", &["AGGR"], 1, 1),
        field(
            "93",
            "BC",
            &[
                "AVAI", "NAVL", "BLOK", "BORR", "COLI", "COLO", "LOAN", "PECA", "PEDA", "PEND",
                "PENR", "REGO", "RSTR", "SPOS", "TRAN",
            ],
            0,
            20,
        ),
        field("19", "A", &["HOLD", "ACRU", "BOOK"], 0, 3),
        field("92", "B", &["EXCH"], 0, 1),
        field("70", "CE", &["SPRO", "HOLD"], 0, 2),
    ],
    &[
        open("FIA", 0, 1),
        open("SUBBAL", 0, MANY),
        open("FXHOLD", 0, 1),
    ],
);

const SUBSAFE_535: SeqSpec = seq(
    "SUBSAFE",
    0,
    MANY,
    &[
        field("95", "LPR", &["ACOW"], 0, 1),
        field("97", "ABD", &["SAFE"], 0, 1),
        field("94", "BCFL", &["SAFE"], 0, 1),
        field("17", "B", &["ACTI"], 0, 1),
    ],
    &[FIN_535],
);

/// MT535.
pub(crate) const STATEMENT_OF_HOLDINGS: &[SeqSpec] =
    &[GENL_535, SUBSAFE_535, open("ADDINFO", 0, 1)];

const GENL_536: SeqSpec = seq(
    "GENL",
    1,
    1,
    &[
        STATEMENT_COMMON[0],
        STATEMENT_COMMON[1],
        STATEMENT_COMMON[2],
        STATEMENT_COMMON[3],
        STATEMENT_COMMON[4],
        STATEMENT_COMMON[5],
        field("69", "AB", &["STAT"], 1, 1),
        field("22", "F", &["SFRE"], 1, 1),
        field("22", "F", &["CODE"], 1, 1),
        field("22", "F", &["STBA"], 0, 1),
        field("97", "ABD", &["SAFE"], 1, 1),
        field("17", "B", &["ACTI"], 1, 1),
        field("17", "B", &["CONS"], 1, 1),
    ],
    &[open("LINK", 0, MANY)],
);

/// MT536.
pub(crate) const STATEMENT_OF_TRANSACTIONS: &[SeqSpec] =
    &[GENL_536, open("SUBSAFE", 0, MANY), open("ADDINFO", 0, 1)];

const GENL_537: SeqSpec = seq(
    "GENL",
    1,
    1,
    &[
        STATEMENT_COMMON[0],
        STATEMENT_COMMON[1],
        STATEMENT_COMMON[2],
        STATEMENT_COMMON[3],
        STATEMENT_COMMON[4],
        STATEMENT_COMMON[5],
        field("98", "ABCE", &["STAT"], 0, 1),
        field("69", "AB", &["STAT"], 0, 1),
        field("22", "H", &["STST"], 1, 1),
        field("22", "F", &["SFRE"], 1, 1),
        field("22", "F", &["CODE"], 1, 1),
        field("22", "F", &["STBA"], 0, 1),
        field("97", "ABD", &["SAFE"], 1, 1),
        field("17", "B", &["ACTI"], 1, 1),
        field("17", "B", &["CONS"], 0, 1),
    ],
    &[open("LINK", 0, MANY)],
);

/// MT537.
pub(crate) const STATEMENT_OF_PENDING: &[SeqSpec] = &[
    GENL_537,
    open("STAT", 0, MANY),
    open("TRANS", 0, MANY),
    open("PENA", 0, MANY),
    open("ADDINFO", 0, 1),
];

const GENL_549: SeqSpec = seq(
    "GENL",
    1,
    1,
    &[
        field("20", "C", &["SEME"], 1, 1),
        field("23", "G", &[], 1, 1),
        field("98", "ACE", &["PREP"], 0, 1),
        field("98", "ABCE", &["STAT"], 0, 1),
        field("69", "AB", &["STAT"], 0, 1),
        field("13", "AB", &["REQU"], 1, 1),
        field("22", "F", &["SFRE", "CODE", "STBA", "STTY"], 0, 4),
        field("95", "LPR", &["ACOW"], 0, 1),
        field("97", "ABD", &["SAFE"], 1, 1),
    ],
    &[open("BYSTAREA", 0, MANY), open("REF", 0, MANY)],
);

/// MT549 (request for statement / status advice).
pub(crate) const STATEMENT_REQUEST: &[SeqSpec] = &[GENL_549, open("ADDINFO", 0, 1)];

/// The top-level sequences of a message type, if we have its schema.
pub(crate) fn for_message_type(message_type: u16) -> Option<&'static [SeqSpec]> {
    match message_type {
        540..=543 => Some(SETTLEMENT_INSTRUCTION),
        544..=547 => Some(SETTLEMENT_CONFIRMATION),
        548 => Some(STATUS_ADVICE),
        535 => Some(STATEMENT_OF_HOLDINGS),
        536 => Some(STATEMENT_OF_TRANSACTIONS),
        537 => Some(STATEMENT_OF_PENDING),
        549 => Some(STATEMENT_REQUEST),
        _ => None,
    }
}
