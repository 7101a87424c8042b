//! The inbox folder and the intake's checks at the edges (issue 10): a file
//! the till is still writing (point 6), rejections that never replace one
//! another (point 7), invoice numbers that could forge logs (point 9) and
//! amounts the backend cannot store (point 5). Real files in temp folders,
//! a real SQLite outbox, one inbox pass at a time (no clock involved).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pos_connector::clock::SystemClock;
use pos_connector::intake::inbox::{Inbox, Look, PassReport};
use pos_connector::intake::sale::{self, IntakeOptions};
use pos_connector::intake::{Intake, OnCommit};
use pos_connector::store::{ListFilter, OutboxHandle};
use serde_json::{json, Value};

use crate::common::files_under;

struct Folder {
    dir: tempfile::TempDir,
    outbox: OutboxHandle,
}

impl Folder {
    fn new() -> Folder {
        let dir = tempfile::tempdir().unwrap();
        let outbox = OutboxHandle::open(&dir.path().join("data")).unwrap();
        Folder { dir, outbox }
    }

    fn inbox_dir(&self) -> PathBuf {
        self.dir.path().join("inbox")
    }

    fn inbox(&self, on_commit: OnCommit) -> Inbox {
        self.inbox_with(IntakeOptions::default(), on_commit)
    }

    fn inbox_with(&self, options: IntakeOptions, on_commit: OnCommit) -> Inbox {
        let intake = Intake::new(
            self.outbox.clone(),
            options,
            Arc::new(SystemClock),
            on_commit,
        );
        let inbox = Inbox::new(
            self.inbox_dir(),
            intake,
            Duration::from_secs(60),
            Duration::ZERO,
            Arc::new(SystemClock),
        );
        inbox.prepare().unwrap();
        inbox
    }

    /// Passes until nothing is waiting: a file is taken at the second look.
    async fn settle(&self, inbox: &Inbox) -> PassReport {
        let mut look = Look::new();
        let mut total = PassReport::default();
        for _ in 0..4 {
            let r = inbox.pass(&mut look).await;
            total.files_archived += r.files_archived;
            total.files_rejected += r.files_rejected;
            total.sales_new += r.sales_new;
            total.sales_duplicate += r.sales_duplicate;
            total.files_deferred += r.files_deferred;
            if r.files_waiting == 0 && r.files_deferred == 0 && look.is_empty() {
                break;
            }
        }
        total
    }

    async fn numbers(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .outbox
            .call(|o| o.list(&ListFilter::default()))
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.invoice_number)
            .collect();
        n.sort();
        n
    }

    fn rejected(&self) -> PathBuf {
        self.inbox_dir().join("rejected")
    }
}

fn csv_rows(from: u32, to: u32) -> String {
    (from..=to)
        .map(|i| format!("T-{i},Coffee,1,2.50\r\n"))
        .collect()
}

/// Point 6: a till writes three sales, pauses longer than the settle time
/// (the file is taken), then writes three more through the handle it still
/// holds. The pause is the first commit: the three late sales are written
/// then, and must be committed before the file is archived.
#[tokio::test]
async fn sales_appended_while_the_file_is_taken_are_read_before_it_is_archived() {
    let f = Folder::new();
    let path = f.inbox_dir().join("sales.csv");
    std::fs::create_dir_all(f.inbox_dir()).unwrap();
    let writer = Arc::new(Mutex::new(Some(std::fs::File::create(&path).unwrap())));
    {
        let mut w = writer.lock().unwrap();
        let w = w.as_mut().unwrap();
        w.write_all(b"\xEF\xBB\xBFinvoice_number,description,quantity,price\r\n")
            .unwrap();
        w.write_all(csv_rows(1, 3).as_bytes()).unwrap();
        w.flush().unwrap();
    }
    let late = writer.clone();
    let inbox = f.inbox(Arc::new(move |_job| {
        // The till's second burst, once, through the handle it kept open
        // (the file is in processing/ by now: the handle follows it).
        if let Some(mut w) = late.lock().unwrap().take() {
            w.write_all(csv_rows(4, 6).as_bytes()).unwrap();
            w.flush().unwrap();
        }
    }));
    let report = f.settle(&inbox).await;
    assert_eq!(report.files_archived, 1, "{report:?}");
    assert_eq!(report.files_rejected, 0, "{report:?}");
    let expected: Vec<String> = (1..=6).map(|i| format!("T-{i}")).collect();
    assert_eq!(f.numbers().await, expected, "every sale of the file");
    let archived = files_under(&f.inbox_dir().join("archive"));
    assert_eq!(archived.len(), 1, "{archived:?}");
    let text = std::fs::read_to_string(&archived[0]).unwrap();
    assert!(text.contains("T-6"), "the whole file is archived: {text}");
    assert!(files_under(&f.inbox_dir().join("processing")).is_empty());
}

/// Point 6, a second burst cut short: the late write leaves half a sale
/// at the end of the file (not valid yet). The file is still being written:
/// it stays claimed, is not rejected, and its last sale is taken once the
/// till has finished it.
#[tokio::test]
async fn a_file_left_half_written_by_a_late_burst_waits_instead_of_being_rejected() {
    let f = Folder::new();
    std::fs::create_dir_all(f.inbox_dir()).unwrap();
    let path = f.inbox_dir().join("orders.jsonl");
    let line = |n: u32| {
        format!(
            "{{\"invoice_number\": \"J-{n}\", \"customer_name\": \"Ann\", \"items\": [{{\"description\": \"Tea\", \"quantity\": 1, \"price\": \"1.50\"}}]}}\n"
        )
    };
    let mut w = std::fs::File::create(&path).unwrap();
    for n in 1..=3 {
        w.write_all(line(n).as_bytes()).unwrap();
    }
    w.flush().unwrap();
    let fourth = line(4);
    let (head, tail) = fourth.split_at(30);
    let writer = Arc::new(Mutex::new(Some(w)));
    let late = writer.clone();
    let head = Mutex::new(Some(head.to_string()));
    let inbox = f.inbox(Arc::new(move |_job| {
        // Once, at the first commit: half of a fourth sale.
        if let Some(h) = head.lock().unwrap().take() {
            let mut w = late.lock().unwrap();
            let w = w.as_mut().unwrap();
            w.write_all(h.as_bytes()).unwrap();
            w.flush().unwrap();
        }
    }));
    let mut look = Look::new();
    let first = inbox.pass(&mut look).await;
    assert_eq!(first.files_waiting, 1, "{first:?}");
    let second = inbox.pass(&mut look).await;
    assert_eq!(
        second.files_rejected, 0,
        "not rejected while written: {second:?}"
    );
    assert_eq!(second.files_archived, 0, "{second:?}");
    assert_eq!(f.numbers().await, ["J-1", "J-2", "J-3"]);
    // The till finishes its line; the next pass takes the last sale.
    {
        let mut w = writer.lock().unwrap().take().unwrap();
        w.write_all(tail.as_bytes()).unwrap();
        w.flush().unwrap();
    }
    let third = inbox.pass(&mut look).await;
    assert_eq!(third.files_archived, 1, "{third:?}");
    assert_eq!(f.numbers().await, ["J-1", "J-2", "J-3", "J-4"]);
    assert!(files_under(&f.rejected()).is_empty());
}

fn note_of(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.error.txt", file.display()))
}

/// Point 7: nothing in `rejected/` is ever written over, whichever name the
/// earlier file or note has.
#[tokio::test]
async fn a_rejection_never_replaces_an_earlier_file_or_note() {
    let f = Folder::new();
    let inbox = f.inbox(Arc::new(|_| {}));
    let drop_file = |name: &str, text: &str| {
        std::fs::write(f.inbox_dir().join(name), text).unwrap();
    };

    drop_file(
        "bad.csv",
        "invoice_number,description,quantity,price\nB-1,Tea,-1,2\n",
    );
    assert_eq!(f.settle(&inbox).await.files_rejected, 1);
    let first_note = f.rejected().join("bad.csv.error.txt");
    let first = std::fs::read_to_string(&first_note).unwrap();
    assert!(first.contains("negative"), "{first}");
    // Someone takes the file out to fix it and leaves the note.
    std::fs::rename(
        f.rejected().join("bad.csv"),
        f.dir.path().join("fixing.csv"),
    )
    .unwrap();

    drop_file(
        "bad.csv",
        "invoice_number,description,quantity,price\nB-2,Tea,1,abc\n",
    );
    assert_eq!(f.settle(&inbox).await.files_rejected, 1);
    assert_eq!(
        std::fs::read_to_string(&first_note).unwrap(),
        first,
        "the first note is untouched"
    );
    let second = f.rejected().join("bad-2.csv");
    assert!(second.exists(), "{:?}", files_under(&f.rejected()));
    let second_note = std::fs::read_to_string(note_of(&second)).unwrap();
    assert!(second_note.contains("abc"), "{second_note}");

    // A rejected file whose name is another file's note name, then that
    // other file: neither replaces the other.
    drop_file("x.csv.error.txt", "\u{1}binary\u{2}");
    assert_eq!(f.settle(&inbox).await.files_rejected, 1);
    let odd = std::fs::read(f.rejected().join("x.csv.error.txt")).unwrap();
    drop_file(
        "x.csv",
        "invoice_number,description,quantity,price\nX-1,Tea,0,2\n",
    );
    assert_eq!(f.settle(&inbox).await.files_rejected, 1);
    assert_eq!(
        std::fs::read(f.rejected().join("x.csv.error.txt")).unwrap(),
        odd,
        "the earlier rejected file is untouched"
    );
    let all = files_under(&f.rejected());
    let x_note = all
        .iter()
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("x") && n.ends_with(".csv.error.txt") && n != "x.csv.error.txt"
        })
        .unwrap_or_else(|| panic!("x.csv's note beside it: {all:?}"));
    let x_file = PathBuf::from(x_note.to_string_lossy().trim_end_matches(".error.txt"));
    assert!(x_file.exists(), "{all:?}");
    assert!(std::fs::read_to_string(x_note).unwrap().contains("is 0"));
    // Every file and note is still there: the first note (its file was
    // taken out), then three files, each with its note.
    assert_eq!(all.len(), 7, "{all:?}");
}

/// `intake.encoding` (issue 12): a till's CSV saved by Excel in
/// Windows-1256, real bytes in a file in the inbox, is committed with its
/// Arabic text; a UTF-8 file with a byte order mark beside it is still read
/// as UTF-8 (the mark wins); without the setting the same file is rejected
/// with a note that names the setting.
#[tokio::test]
async fn an_export_in_windows_1256_is_read_through_the_inbox() {
    // "W-1, أحمد, قهوة عربية" as Windows-1256 writes it.
    let cp1256: &[u8] = b"invoice_number,customer,description,quantity,price\r\n\
        W-1,\xc3\xcd\xe3\xcf,\xde\xe5\xe6\xc9 \xda\xd1\xc8\xed\xc9,2,1.500\r\n";
    let utf8_bom = "\u{feff}invoice_number,customer,description,quantity,price\r\n\
                    U-1,مطعم الياسمين,شاي,1,0.750\r\n";

    let f = Folder::new();
    let options = IntakeOptions {
        encoding: encoding_rs::Encoding::for_label(b"windows-1256").unwrap(),
        ..IntakeOptions::default()
    };
    let inbox = f.inbox_with(options, Arc::new(|_| {}));
    std::fs::write(f.inbox_dir().join("excel.csv"), cp1256).unwrap();
    std::fs::write(f.inbox_dir().join("utf8.csv"), utf8_bom).unwrap();
    let report = f.settle(&inbox).await;
    assert_eq!(report.files_archived, 2, "{report:?}");
    assert_eq!(report.files_rejected, 0, "{report:?}");
    let jobs = f
        .outbox
        .call(|o| o.list(&ListFilter::default()))
        .await
        .unwrap();
    let sale = |n: &str| -> Value {
        let job = jobs.iter().find(|j| j.invoice_number == n).unwrap();
        serde_json::from_str(&job.sale_json).unwrap()
    };
    let w1 = sale("W-1");
    assert_eq!(w1["customer_name"], "أحمد", "{w1}");
    assert_eq!(w1["lines"][0]["description"], "قهوة عربية", "{w1}");
    assert_eq!(w1["lines"][0]["quantity"], 2, "{w1}");
    let u1 = sale("U-1");
    assert_eq!(u1["customer_name"], "مطعم الياسمين", "{u1}");

    // The default (UTF-8): the same bytes are refused, the note says how.
    let plain = Folder::new();
    let inbox = plain.inbox(Arc::new(|_| {}));
    std::fs::write(plain.inbox_dir().join("excel.csv"), cp1256).unwrap();
    assert_eq!(plain.settle(&inbox).await.files_rejected, 1);
    let note = std::fs::read_to_string(plain.rejected().join("excel.csv.error.txt")).unwrap();
    assert!(
        note.contains("not UTF-8") && note.contains("intake.encoding"),
        "{note}"
    );
    assert!(plain.numbers().await.is_empty());
}

/// Point 9: control characters in an invoice number (a new log line, a
/// terminal escape, NUL, a bidi override that shows "GPJ.exe" as
/// "exe.JPG") are refused at intake with the place and the reason; the
/// reason itself shows them escaped.
#[test]
fn invoice_numbers_with_control_characters_are_refused_with_the_reason() {
    let opts = IntakeOptions::default();
    let cases = [
        ("A-1\nINFO forged", "U+000A"),
        ("A-1\u{1b}[31m", "U+001B"),
        ("A-\u{0}1", "U+0000"),
        ("INV-\u{202e}1gpj.exe", "U+202E"),
        ("INV-\u{2066}1", "U+2066"),
        ("INV\u{200b}-1", "U+200B"),
        ("INV-\u{2028}1", "U+2028"),
        ("INV-\u{85}1", "U+0085"),
    ];
    for (number, code) in cases {
        let doc = json!({"invoice_number": number, "customer_name": "Ann",
                         "items": [{"description": "Tea", "quantity": 1, "price": "1.50"}]});
        let err = sale::parse_json(&doc, &opts).unwrap_err();
        let p = &err.problems[0];
        assert_eq!(p.location, "invoice_number", "{number:?}: {err}");
        assert!(p.message.contains(code), "{number:?}: {}", p.message);
        assert!(
            !p.message
                .chars()
                .any(|c| c.is_control() || ('\u{2000}'..='\u{206f}').contains(&c)),
            "the reason quotes it raw: {:?}",
            p.message
        );
        // The same through a file (JSON escapes) and over HTTP's reader.
        let bytes = serde_json::to_vec(&doc).unwrap();
        assert!(
            sale::parse_file("s.json", &bytes, &opts).is_err(),
            "{number:?}"
        );
    }
    // A quoted CSV field may hold a line break: not in a number.
    let csv = "invoice_number,description,quantity,price\n\"C-1\nC-2\",Tea,1,2\n";
    let err = sale::parse_file("s.csv", csv.as_bytes(), &opts).unwrap_err();
    assert!(
        err.problems[0].location.contains("invoice_number")
            && err.problems[0].message.contains("U+000A"),
        "{err}"
    );
    // Letters of any script, spaces inside, dashes and slashes are fine.
    for number in ["فاتورة-17", "INV 2025/0001", "Σ-1", "A_B#3"] {
        let doc = json!({"invoice_number": number, "customer_name": "Ann",
                         "items": [{"description": "Tea", "quantity": 1, "price": 1}]});
        let sales = sale::parse_json(&doc, &opts).unwrap();
        assert_eq!(sales[0].invoice_number, number);
    }
}

/// Point 5: what the backend's decimal(15,2) columns cannot hold is refused
/// at intake with the place, so one absurd sale never reaches the backend
/// (whose 500s would stall every other sale).
#[test]
fn amounts_the_backend_cannot_store_are_refused_at_intake() {
    let opts = IntakeOptions::default();
    let one =
        |items: Value| json!({"invoice_number": "BIG-1", "customer_name": "Ann", "items": items});
    let refused = |doc: Value, place: &str, words: &[&str]| {
        let err = sale::parse_json(&doc, &opts).unwrap_err();
        let p = err
            .problems
            .iter()
            .find(|p| p.location == place)
            .unwrap_or_else(|| panic!("nothing at {place}: {err}"));
        for w in words {
            assert!(p.message.contains(w), "{place}: {}", p.message);
        }
    };
    // A unit price beyond decimal(15,2).
    refused(
        one(json!([{"description": "Gold", "quantity": 1, "price": "10000000000000"}])),
        "items[0].price",
        &["9999999999999.99", "too large"],
    );
    // A line whose total with the 16% tax overflows, from parts that fit.
    refused(
        one(json!([{"description": "Gold", "quantity": 3, "price": "3000000000000"}])),
        "items[0]",
        &["10440000000000.00", "16%", "split"],
    );
    // Lines that fit, an invoice total that does not.
    refused(
        one(json!([
            {"description": "Gold", "quantity": 1, "price": "5000000000000"},
            {"description": "Gold", "quantity": 1, "price": "5000000000000"}
        ])),
        "(document)",
        &["11600000000000.00", "invoice total", "split"],
    );
    // A quantity the backend's integer column cannot hold.
    refused(
        one(json!([{"description": "Nails", "quantity": 3000000000u64, "price": "0.001"}])),
        "items[0].quantity",
        &["2147483647"],
    );
    // A fraction converted to one unit at an amount that does not fit.
    refused(
        one(json!([{"description": "Gold", "quantity": 1.5, "price": "9000000000000"}])),
        "items[0].price",
        &["too large"],
    );
    // CSV: the row and column.
    let csv = "invoice_number,description,quantity,price\nC-1,Gold,1,99999999999999\n";
    let err = sale::parse_file("s.csv", csv.as_bytes(), &opts).unwrap_err();
    assert_eq!(
        err.problems[0].location, "line 2, column \"price\"",
        "{err}"
    );
    // The largest that fits: 8620689655172.40 x 1.16 = 9999999999999.984.
    let ok = sale::parse_json(
        &one(json!([{"description": "Gold", "quantity": 1, "price": "8620689655172.40"}])),
        &opts,
    );
    assert!(ok.is_ok(), "{ok:?}");
    refused(
        one(json!([{"description": "Gold", "quantity": 1, "price": "8620689655172.42"}])),
        "items[0]",
        &["10000000000000.01"],
    );
}

/// Point 9, from outside: the running service writes what a till named a
/// file and what the backend answered into its log files. Neither can
/// start a line of its own, paint the terminal or reverse the text.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_a_file_name_nor_a_backend_answer_can_forge_a_log_line() {
    use crate::common::{wait_until, Fixture, SANDBOX_PASSWORD};
    let fx = Fixture::start().await;
    let forged = "\n2031-01-01T00:00:00.000000Z ERROR FORGED-LINE the backend is down";
    fx.sandbox
        .set_config_updates(json!({format!("colour{forged}"): "\u{1b}[2J\u{202e}dlrow"}))
        .unwrap();
    let cfg = fx.write_config(json!({
        "password": SANDBOX_PASSWORD,
        "log_level": "debug",
        "sync_interval": 1,
        "intake": {"settle_seconds": 0},
        "api_key": pos_sandbox::laravel::SANDBOX_API_KEY,
    }));
    let inbox = fx.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(
        inbox.join(format!("x{forged}\u{1b}[31m\u{202e}.csv")),
        "not,a\nsale",
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pos-connector"))
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .current_dir(fx.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "the file rejected", || async {
        files_under(&inbox.join("rejected")).len() == 2
    })
    .await;
    wait_until(Duration::from_secs(30), "a heartbeat", || async {
        !fx.sandbox.heartbeats().is_empty()
    })
    .await;
    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    child.wait().await.unwrap();
    let mut logs = String::new();
    for f in files_under(&fx.path("logs")) {
        logs.push_str(&String::from_utf8_lossy(&std::fs::read(f).unwrap()));
    }
    let mentions = logs.matches("FORGED-LINE").count();
    assert!(mentions >= 2, "the file and the setting are logged: {logs}");
    for line in logs.lines() {
        assert!(
            !line.contains("FORGED-LINE") || !line.starts_with("2031"),
            "forged: {line}"
        );
    }
    for c in ['\u{1b}', '\u{202e}', '\u{0}'] {
        assert!(
            !logs.contains(c),
            "U+{:04X} reached the log: {logs:?}",
            c as u32
        );
    }
}
