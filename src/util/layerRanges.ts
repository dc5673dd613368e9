/** Layer lists in words, for file names, tables and legends. */

/** Sorted layer indices as a compact list: [0,1,2,3,6] -> "0-3,6". */
export function layerRangesText(layers: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < layers.length; ) {
    let j = i;
    while (j + 1 < layers.length && layers[j + 1] === layers[j]! + 1) j++;
    parts.push(i === j ? String(layers[i]) : `${layers[i]}-${layers[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}
