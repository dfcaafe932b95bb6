/** A markdown table of rows whose first row is the header. */
export function markdown(rows: readonly (readonly string[])[]): string {
  const width = rows[0]?.length ?? 0;
  return rows
    .map((row) => `| ${row.join(' | ')} |`)
    .join('\n')
    .replace(/\n/, `\n|${Array.from({ length: width }, () => '---').join('|')}|\n`);
}
