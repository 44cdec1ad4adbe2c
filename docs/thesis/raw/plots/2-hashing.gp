$d0 << EOD
-0.18 10.076099108602978
0.8200000000000001 9.130984799571491
1.82 4.74731424515209
2.82 1.3729277294924807
3.82 0.7619565471283625
4.82 1008.9064676682361
EOD
$d1 << EOD
0.18 8.516290994393932
1.18 8.59713637875594
2.18 13.282367578258711
3.18 1.4018715339381207
4.18 0.756265683435668
5.18 957.3452940514591
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/2-hashing.png'
set title "#2 one dirty-detection pass (thesis: not measured; its prototype used CRC32 per block)"
set xlabel ""
set ylabel "GB/s of region covered per second (log)"
set grid
set key below left Left reverse maxcols 2 height 1
set logscale y
set style fill solid 0.6
set boxwidth 0.35
set xtics ("XXH3-64" 0, "XXH3-128" 1, "CRC32C" 2, "SHA-256" 3, "BLAKE2b-256" 4, "exact (uffd-wp)" 5) rotate by -20
set xrange [-0.6:5.6]
plot $d0 using 1:2 with boxes  title "4 KiB chunks", \
  $d1 using 1:2 with boxes  title "64 KiB chunks"
