//! Names for bulk seeding: a Jordanian shop's customers, suppliers and
//! products, in Latin and Arabic script.

pub const FIRST: [&str; 40] = [
    "Ahmad", "Mohammad", "Omar", "Khaled", "Yousef", "Ali", "Hassan", "Hussein", "Ibrahim",
    "Tareq", "Zaid", "Hamza", "Faisal", "Saleh", "Nasser", "Majed", "Rami", "Sami", "Laith",
    "Anas", "Bilal", "Osama", "Waleed", "Ziad", "Fadi", "Lina", "Sara", "Rana", "Dana", "Hala",
    "Noor", "Aya", "Reem", "Maha", "Rasha", "Hiba", "Yasmin", "Leen", "Farah", "Tala",
];
pub const MIDDLE: [&str; 30] = [
    "Abdullah", "Mahmoud", "Mustafa", "Jamal", "Kamal", "Adel", "Nabil", "Samir", "Talal", "Fawzi",
    "Hani", "Issa", "Jaber", "Marwan", "Nidal", "Raed", "Salem", "Suleiman", "Wael", "Yaser",
    "Adnan", "Bassam", "Emad", "Ghassan", "Hatem", "Imad", "Jihad", "Munir", "Qasem", "Shadi",
];
pub const LAST: [&str; 50] = [
    "Haddad",
    "Khatib",
    "Nasser",
    "Masri",
    "Khoury",
    "Saleh",
    "Obeidat",
    "Tamimi",
    "Zoubi",
    "Hijazi",
    "Qasem",
    "Shami",
    "Bataineh",
    "Rawashdeh",
    "Momani",
    "Smadi",
    "Khalaf",
    "Awad",
    "Hamdan",
    "Jaradat",
    "Abu Ghazaleh",
    "Al-Omari",
    "Al-Rifai",
    "Darwish",
    "Farouk",
    "Ghanem",
    "Habash",
    "Issa",
    "Jabri",
    "Kurdi",
    "Louzi",
    "Mansour",
    "Najjar",
    "Odeh",
    "Qudah",
    "Rashid",
    "Sabbagh",
    "Tarawneh",
    "Uraiqat",
    "Wahsh",
    "Yaghi",
    "Zaatari",
    "Abbadi",
    "Bakri",
    "Dajani",
    "Fakhoury",
    "Halaseh",
    "Kilani",
    "Muasher",
    "Sharif",
];
pub const AR_FIRST: [&str; 30] = [
    "أحمد",
    "محمد",
    "عمر",
    "خالد",
    "يوسف",
    "علي",
    "حسن",
    "حسين",
    "إبراهيم",
    "طارق",
    "زيد",
    "حمزة",
    "فيصل",
    "صالح",
    "ناصر",
    "ماجد",
    "رامي",
    "سامي",
    "ليث",
    "أنس",
    "لينا",
    "سارة",
    "رنا",
    "دانا",
    "هالة",
    "نور",
    "آية",
    "ريم",
    "مها",
    "فرح",
];
pub const AR_MIDDLE: [&str; 25] = [
    "عبدالله",
    "محمود",
    "مصطفى",
    "جمال",
    "كمال",
    "عادل",
    "نبيل",
    "سمير",
    "طلال",
    "فوزي",
    "هاني",
    "عيسى",
    "جابر",
    "مروان",
    "نضال",
    "رائد",
    "سالم",
    "سليمان",
    "وائل",
    "ياسر",
    "عدنان",
    "بسام",
    "عماد",
    "غسان",
    "حاتم",
];
pub const AR_LAST: [&str; 30] = [
    "الحداد",
    "الخطيب",
    "الناصر",
    "المصري",
    "الخوري",
    "الصالح",
    "العبيدات",
    "التميمي",
    "الزعبي",
    "الحجازي",
    "القاسم",
    "الشامي",
    "البطاينة",
    "الرواشدة",
    "المومني",
    "الصمادي",
    "خلف",
    "عوض",
    "حمدان",
    "جرادات",
    "العمري",
    "الرفاعي",
    "درويش",
    "غانم",
    "حبش",
    "المنصور",
    "النجار",
    "عودة",
    "القضاة",
    "الطراونة",
];
pub const COMPANY: [&str; 8] = [
    "Trading",
    "Supermarket",
    "Pharmacy",
    "Bakery",
    "Motors",
    "Electronics",
    "Contracting",
    "& Sons",
];
pub const AR_COMPANY: [&str; 4] = ["مؤسسة", "شركة", "سوبرماركت", "صيدلية"];
pub const SUPPLIER: [&str; 8] = [
    "Supplies",
    "Wholesale",
    "Distribution",
    "Imports",
    "Foods",
    "Packaging",
    "Logistics",
    "Trading Co.",
];
pub const PRODUCT: [(&str, &str); 50] = [
    ("Arabic Coffee", "COF"),
    ("Turkish Coffee", "COF"),
    ("Espresso Beans", "COF"),
    ("Green Tea", "TEA"),
    ("Black Tea", "TEA"),
    ("Sage Tea", "TEA"),
    ("Zaatar", "SPC"),
    ("Olive Oil", "OIL"),
    ("Labneh", "DRY"),
    ("Halloumi", "DRY"),
    ("Hummus", "CAN"),
    ("Tahini", "CAN"),
    ("Medjool Dates", "DAT"),
    ("Basmati Rice", "GRN"),
    ("Bulgur", "GRN"),
    ("Lentils", "GRN"),
    ("Chickpeas", "GRN"),
    ("Sumac", "SPC"),
    ("Cardamom", "SPC"),
    ("Saffron", "SPC"),
    ("Pita Bread", "BAK"),
    ("Kaak", "BAK"),
    ("Knafeh", "SWT"),
    ("Baklava", "SWT"),
    ("Maamoul", "SWT"),
    ("Pistachio", "NUT"),
    ("Almonds", "NUT"),
    ("Cashews", "NUT"),
    ("Mineral Water", "BEV"),
    ("Orange Juice", "BEV"),
    ("Laban", "DRY"),
    ("Yogurt", "DRY"),
    ("Dish Soap", "HSE"),
    ("Laundry Powder", "HSE"),
    ("Tissue Box", "HSE"),
    ("Paper Cups", "HSE"),
    ("Phone Charger", "ELC"),
    ("USB Cable", "ELC"),
    ("AA Batteries", "ELC"),
    ("LED Bulb", "ELC"),
    ("قهوة عربية", "COF"),
    ("شاي أخضر", "TEA"),
    ("زيت زيتون", "OIL"),
    ("زعتر بلدي", "SPC"),
    ("لبنة", "DRY"),
    ("حلاوة", "SWT"),
    ("تمر مجدول", "DAT"),
    ("أرز بسمتي", "GRN"),
    ("كعك بالسمسم", "BAK"),
    ("مياه معدنية", "BEV"),
];
pub const VARIANT: [&str; 25] = [
    "",
    "Premium",
    "Classic",
    "Organic",
    "Extra",
    "Family Pack",
    "Mini",
    "Gold",
    "Light",
    "Spicy",
    "Sugar Free",
    "Bulk",
    "Imported",
    "Local",
    "Fresh",
    "Frozen",
    "Roasted",
    "Salted",
    "Unsalted",
    "Double",
    "Select",
    "Value",
    "Deluxe",
    "Eco",
    "Special",
];
pub const SIZE: [&str; 20] = [
    "100g",
    "250g",
    "500g",
    "1kg",
    "2kg",
    "5kg",
    "250ml",
    "500ml",
    "1L",
    "1.5L",
    "2L",
    "5L",
    "Pack of 6",
    "Pack of 12",
    "Pack of 24",
    "Small",
    "Medium",
    "Large",
    "XL",
    "Box",
];

/// The digits of `i` in the mixed radix of `lens`, and the round past
/// the last combination (a round number keeps results unique). Within
/// a round `i` is scrambled (multiplied by a prime coprime with the
/// number of combinations: still one-to-one), so consecutive entities
/// do not share a family name.
pub fn digits<const N: usize>(i: usize, lens: [usize; N]) -> ([usize; N], usize) {
    let combos: usize = lens.iter().product();
    let step = [7919, 7927, 7933]
        .into_iter()
        .find(|p| !combos.is_multiple_of(*p))
        .unwrap_or(1);
    let (round, within) = (i / combos, i % combos);
    let mut rest = within * step % combos;
    let mut out = [0; N];
    for (o, len) in out.iter_mut().zip(lens) {
        *o = rest % len;
        rest /= len;
    }
    (out, round)
}

/// One entry of each list, by [`digits`].
pub fn pick<const N: usize>(i: usize, lists: [&[&'static str]; N]) -> ([&'static str; N], usize) {
    let (d, round) = digits(i, lists.map(|l| l.len()));
    let mut out = [""; N];
    for ((o, l), d) in out.iter_mut().zip(lists).zip(d) {
        *o = l[d];
    }
    (out, round)
}

/// `base`, or `base N` from the second round on.
pub fn numbered(base: String, round: usize) -> String {
    if round == 0 {
        base
    } else {
        format!("{base} {}", round + 1)
    }
}
